// Drive the real npm `xen-api` client with its event watcher on, and report what it saw.
//
// Usage: node xapi_events.mjs URL TRANSPORT, with a line protocol on stdin / stdout:
//   in:  {"user", "password", "vm", "poolUuid"}       (first line)
//   out: {"phase": "ready", ...}                       connected, every type fetched
//   in:  {"expect": LABEL}                             another client renamed the VM to LABEL
//   out: {"phase": "done", ...}                        what the rest of the session saw
// Every RPC method the client sends is recorded in order ("calls"), so the test can check
// the connect sequence (event.inject, get_all_records of every type, event.from loop).

import { createInterface } from 'node:readline'
import { Xapi } from 'xen-api'

const [url, transport = 'auto'] = process.argv.slice(2)
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const nextLine = async () => JSON.parse((await lines.next()).value)
const say = obj => process.stdout.write(JSON.stringify(obj) + '\n')
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

const describeError = error => ({
  name: error?.constructor?.name,
  code: error?.code,
  params: error?.params,
  message: String(error?.message ?? error),
})

// Resolve once predicate() holds, checking after every batch of events (and on a timer).
const waitFor = async (predicate, ms = 15000) => {
  const start = Date.now()
  while (!predicate()) {
    if (Date.now() - start > ms) {
      throw new Error('timed out waiting for an event')
    }
    await sleep(10)
  }
  return Date.now() - start
}

const program = await nextLine()
const xapi = new Xapi({
  url,
  auth: { user: program.user, password: program.password },
  allowUnauthorized: true,
  transport,
})
const calls = []
const originalCall = xapi._call.bind(xapi)
xapi._call = (method, ...rest) => {
  calls.push(method)
  return originalCall(method, ...rest)
}

const report = {}
try {
  await xapi.connect()
  await xapi.objectsFetched
  const byType = {}
  for (const object of Object.values(xapi.objects.all)) {
    byType[object.$type] = (byType[object.$type] ?? 0) + 1
  }
  say({ phase: 'ready', types: xapi._types, counts: byType, calls: [...calls] })

  const { expect } = await nextLine()
  report.renameSeenAfterMs = await waitFor(() => xapi.getObjectByRef(program.vm, undefined)?.name_label === expect)

  // callAsync: Async.VM.clone, then the result arrives through the task's events.
  const cloneRef = await xapi.callAsync('VM.clone', program.vm, `npm-clone-${transport}`)
  report.clone = cloneRef
  await waitFor(() => xapi.getObjectByRef(cloneRef, undefined) !== undefined)
  report.cloneLabel = xapi.getObjectByRef(cloneRef).name_label

  try {
    await xapi.callAsync('VM.destroy', 'OpaqueRef:no-such-vm')
    report.failedCall = { ok: true }
  } catch (error) {
    report.failedCall = describeError(error)
  }

  await xapi.barrier()
  report.barrier = true

  const messageRef = await xapi.call('message.create', 'NPM_TEST', 5, 'Pool', program.poolUuid, 'hello')
  await waitFor(() => xapi.getObjectByRef(messageRef, undefined) !== undefined)
  report.message = { ref: messageRef, name: xapi.getObjectByRef(messageRef).name }

  const tasks = Object.values(xapi.objects.all).filter(object => object.$type === 'task')
  report.cachedTasks = tasks.length
  report.watchEventsError = xapi.watchEventsError === undefined ? null : describeError(xapi.watchEventsError)
} catch (error) {
  report.error = describeError(error)
}
report.calls = calls
report.phase = 'done'
say(report)
await xapi.disconnect()
process.exit(0)
