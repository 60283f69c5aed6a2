"""SM: one record per storage driver, describing its type, configuration and features.

There are no SM messages beyond the generated ones; the records are (re)made at start
from the drivers themselves, so ``SM.features`` always says what the code supports.
"""

from __future__ import annotations

from openxapi import __version__
from openxapi.api.state import ServerState
from openxapi.storage.registry import DRIVERS


def ensure_sm_records(state: ServerState) -> None:
    """One SM record per registered SR type, refreshed to the driver's facts."""
    store = state.store
    by_type = {rec["type"]: ref for ref, rec in store.table("SM").items()}
    for sr_type, cls in DRIVERS.items():
        values = {
            "name_label": cls.sm_name,
            "name_description": cls.sm_description,
            "type": sr_type,
            "vendor": "openxapi",
            "copyright": "(C) openxapi contributors",
            "version": __version__,
            "required_api_version": "1.0",
            "configuration": dict(cls.sm_configuration),
            "capabilities": sorted(cls.features),
            "features": dict(sorted(cls.features.items())),
            "driver_filename": f"{cls.__module__}.{cls.__name__}",
            "required_cluster_stack": [],
            "supported_image_formats": list(cls.image_formats),
        }
        ref = by_type.get(sr_type)
        if ref is None:
            state.create("SM", values)
        else:
            rec = store.get("SM", ref)
            assert rec is not None
            changed = {k: v for k, v in values.items() if rec.get(k) != v}
            if changed:
                store.update("SM", ref, changed)
