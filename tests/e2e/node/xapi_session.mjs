// Drive the real npm `xen-api` client through a list of operations and print what it saw.
//
// Usage: node xapi_session.mjs URL TRANSPORT [strict-tls] < program.json
//   TRANSPORT is the client's `transport` option (auto, json-rpc, xml-rpc).
//   "strict-tls" leaves certificate checking on (allowUnauthorized: false).
// The program is {"user", "password", "ops": [{"op": NAME, "args": [...]}, ...]}; each op's
// outcome is {"ok": value} or {"error": {...}} in the printed "results", so one failing op
// does not hide the others. Dates are printed as {"$date": ISO} to tell them from strings.

import { readFileSync } from 'node:fs'
import { Xapi } from 'xen-api'

const [url, transport = 'auto', tls = ''] = process.argv.slice(2)
const program = JSON.parse(readFileSync(0, 'utf8'))

const describeError = error => ({
  name: error?.constructor?.name,
  code: error?.code,
  params: error?.params,
  message: String(error?.message ?? error),
})

const withRef = record => ({ ...record, $ref: record.$ref, $id: record.$id, $type: record.$type })

const ops = {
  call: (xapi, method, ...args) => xapi.call(method, ...args),
  getRecord: async (xapi, type, ref) => withRef(await xapi.getRecord(type, ref)),
  // The client returns an array of wrapped records; key them by ref again for comparison.
  getAllRecords: async (xapi, type) =>
    Object.fromEntries((await xapi.getAllRecords(type)).map(record => [record.$ref, withRef(record)])),
  getField: (xapi, type, ref, field) => xapi.getField(type, ref, field),
  setField: (xapi, type, ref, field, value) => xapi.setField(type, ref, field, value),
  setFieldEntry: (xapi, type, ref, field, entry, value) => xapi.setFieldEntry(type, ref, field, entry, value),
  // The session-less introspection call the client makes while connecting.
  listMethods: xapi => xapi._call('system.listMethods'),
  // What the event watcher would do on start: get_all_records for every type the client derived
  // from system.listMethods. Reports a record count or the error code per type.
  fetchAllTypes: async xapi => {
    const outcome = {}
    for (const type of xapi._types) {
      try {
        outcome[type] = { count: Object.keys(await xapi.getAllRecords(type)).length }
      } catch (error) {
        outcome[type] = { error: describeError(error) }
      }
    }
    return outcome
  },
}

const replacer = function (key, value) {
  const raw = this[key]
  return raw instanceof Date ? { $date: raw.toISOString() } : value
}

const xapi = new Xapi({
  url,
  auth: { user: program.user, password: program.password },
  allowUnauthorized: tls !== 'strict-tls',
  transport,
  watchEvents: false,
})

const report = { connected: false }
try {
  await xapi.connect()
  report.connected = true
  report.pool = withRef(xapi.pool)
  report.types = xapi._types
  report.results = []
  for (const { op, args = [] } of program.ops) {
    const fn = ops[op]
    if (fn === undefined) {
      throw new Error('unknown op ' + op)
    }
    try {
      const value = await fn(xapi, ...args)
      report.results.push({ ok: value === undefined ? null : value })
    } catch (error) {
      report.results.push({ error: describeError(error) })
    }
  }
} catch (error) {
  report.error = describeError(error)
} finally {
  await xapi.disconnect()
}
process.stdout.write(JSON.stringify(report, replacer) + '\n', () => process.exit(0))
