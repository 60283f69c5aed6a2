"""Host plugins shipped with the server, each a script following the XenAPIPlugin convention.

A plugin named ``disk-space`` is the module ``disk_space``; a file of the same name in the
plugin directory takes its place.
"""
