#!/usr/bin/env node
// oms-gateway from Node (@grpc/grpc-js + @grpc/proto-loader): a cash-in from location to
// completed, and the rich errors.
//
//   node example.js [--addr 127.0.0.1:50051] [--outage-id ci_outage_demo]
//
// 1. ListCashLocations: a Greendot location near a point.
// 2. CreateCashIn with an idempotency key (retrying with the same key never creates a second one).
// 3. WatchCashIn, and while it watches, SandboxService.SimulateDeposit (embedded sandbox only):
//    the stream reports the change and ends OK at the terminal state; the final amounts are printed.
// 4. Errors: the google.rpc.Status in the `grpc-status-details-bin` trailer, decoded with
//    protobufjs — BadRequest (a deliberately invalid create), ResourceInfo (an unknown id),
//    ErrorInfo (always exactly one), RetryInfo (when retrying may help: how long to wait).
//
// proto-loader reads ../../proto directly (no generated code). The deposit code is a bearer
// instrument, so it is never printed.
'use strict';

const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO = path.resolve(__dirname, '..', '..', 'proto');
// Every call has a deadline: the gateway bounds its upstream work by it.
const TIMEOUT_MS = 15000;

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const addr = arg('--addr', process.env.OMS_GATEWAY_ADDR || '127.0.0.1:50051');
const outageId = arg('--outage-id', 'ci_outage_demo');

const definition = protoLoader.loadSync(
  ['polygon/oms/v1/cash_in.proto', 'polygon/oms/v1/cash_location.proto', 'polygon/oms/v1/sandbox.proto'],
  { includeDirs: [PROTO], keepCase: false, longs: String, enums: String, defaults: true, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).polygon.oms.v1;

// google.rpc.Status and the error details (./proto/google/rpc: googleapis' messages).
const rpc = protobuf.loadSync([
  path.join(__dirname, 'proto/google/rpc/status.proto'),
  path.join(__dirname, 'proto/google/rpc/error_details.proto'),
]);
const Status = rpc.lookupType('google.rpc.Status');

const deadline = (ms = TIMEOUT_MS) => ({ deadline: new Date(Date.now() + ms) });
// unary(client, 'Method', request): the call as a promise.
const unary = (client, method, request) =>
  new Promise((resolve, reject) =>
    client[method](request, deadline(), (err, response) => (err ? reject(err) : resolve(response))));

function printAmounts(ci) {
  console.log(`  status           ${ci.status}`);
  console.log(`  deposited        ${ci.source.amount} ${ci.source.asset.toUpperCase()}`);
  console.log(`  fees deducted    ${ci.source.feesDeducted.total}`);
  console.log(`  delivered (net)  ${ci.destination.amountNet} ${ci.destination.asset.toUpperCase()}`);
  console.log(`  transaction      ${ci.transactionId}`);
}

// === the rich error details ===

// The google.rpc.Status the gateway puts in the `grpc-status-details-bin` trailer, or null.
function richStatus(err) {
  const [bin] = (err.metadata && err.metadata.get('grpc-status-details-bin')) || [];
  return bin ? Status.decode(bin) : null;
}

function printError(label, err) {
  console.log(`${label}: ${grpc.status[err.code]}: ${err.details}`);
  const status = richStatus(err);
  if (!status) {
    console.log('  (no grpc-status-details-bin trailer)');
    return;
  }
  for (const any of status.details) {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    let type;
    try {
      type = rpc.lookupType(typeName);
    } catch {
      console.log(`  ${any.type_url}`);
      continue;
    }
    const d = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
    switch (typeName) {
      case 'google.rpc.ErrorInfo': {
        const meta = Object.keys(d.metadata).sort().map((k) => `${k}=${d.metadata[k]}`).join(', ');
        console.log(`  ErrorInfo reason=${d.reason} domain=${d.domain} ${meta}`.trimEnd());
        break;
      }
      case 'google.rpc.BadRequest':
        for (const v of d.fieldViolations) console.log(`  BadRequest ${v.field}: ${v.description}`);
        break;
      case 'google.rpc.RetryInfo': {
        const delay = (d.retryDelay.seconds || 0) + (d.retryDelay.nanos || 0) / 1e9;
        console.log(`  RetryInfo retry_delay=${delay}s (wait this long before retrying; a write with the same key)`);
        break;
      }
      case 'google.rpc.ResourceInfo':
        console.log(`  ResourceInfo ${d.resourceType} ${d.resourceName}: ${d.description}`);
        break;
      default:
        console.log(`  ${typeName}`);
    }
  }
}

// === the flow ===

// watchUntilDone: WatchCashIn; once the stream sent the current state, the deposit is simulated.
// Resolves with the last cash-in when the stream ends OK (right after a terminal status).
function watchUntilDone(cashIns, sandbox, id) {
  return new Promise((resolve, reject) => {
    let last = null;
    const stream = cashIns.WatchCashIn({ cashInId: id }, deadline(60000));
    stream.on('data', (event) => {
      if (event.type === 'CASH_IN_EVENT_TYPE_HEARTBEAT') {
        console.log(`watch: ${event.type}`);
        return;
      }
      last = event.cashIn;
      const changed = event.changedFields.length ? ` changed ${event.changedFields.join(', ')}` : '';
      console.log(`watch: ${event.type} ${last.status}${changed}`);
      if (event.type === 'CASH_IN_EVENT_TYPE_INITIAL') {
        unary(sandbox, 'SimulateDeposit', { cashInId: id, amount: '200.00' })
          .then(() => console.log('sandbox: deposit of 200.00 simulated'))
          .catch((err) => {
            stream.cancel();
            reject(err);
          });
      }
    });
    stream.on('error', reject);
    stream.on('status', (s) => {
      if (s.code === grpc.status.OK) {
        console.log('watch: ended OK');
        resolve(last);
      }
    });
  });
}

async function main() {
  const creds = grpc.credentials.createInsecure();
  const locations = new v1.CashLocationService(addr, creds);
  const cashIns = new v1.CashInService(addr, creds);
  const sandbox = new v1.SandboxService(addr, creds);

  // 1. Where can the customer pay?
  const found = await unary(locations, 'ListCashLocations', {
    provider: 'greendot', latitude: 38.495133, longitude: -121.505336,
  });
  const loc = found.cashLocations[0];
  console.log(`location: ${loc.id} ${loc.name}, ${loc.city}`);

  // 2. A $200 cash-in with developer fees of 1% + $1.00. The key is what makes retries safe:
  //    a real caller derives it from its own order id; this example makes one per run.
  const key = `example-node-${crypto.randomUUID()}`;
  const metadata = new grpc.Metadata();
  metadata.set('idempotency-key', key); // or the idempotencyKey field of the request
  const created = await new Promise((resolve, reject) =>
    cashIns.CreateCashIn({
      customerId: 'cst_example_node',
      source: { asset: 'usd', indicatedAmount: '200.00' },
      destination: { asset: 'usdc', network: 'polygon', wallet: { wallet: 'wlt_example_node' } },
      cash: { cashLocationId: loc.id, cashLocationReference: loc.locReference },
      developerFees: [
        { percentage: '0.01', wallet: 'wlt_fee_node' },
        { flatFee: '1.00', wallet: 'wlt_fee_node' },
      ],
    }, metadata, deadline(), (err, r) => (err ? reject(err) : resolve(r.cashIn))));
  console.log(`created: ${created.id} ${created.status} (idempotency key ${key})`);
  const expires = new Date(Number(created.depositInstructions.expiresAt.seconds) * 1000);
  console.log(`  deposit code issued, expires at ${expires.toISOString()}`);

  // 3. Watch it while the customer pays at the counter.
  const final = await watchUntilDone(cashIns, sandbox, created.id);
  console.log('final:');
  printAmounts(final);

  // 4. Errors, as a caller reads them.
  const failing = [
    ['invalid create', 'CreateCashIn', { customerId: 'bad', source: { asset: 'usd', indicatedAmount: '5' } }],
    ['unknown cash-in', 'GetCashIn', { cashInId: 'ci_unknown' }],
    // NOT_FOUND, or, against a gateway started with --sandbox-faults '503=1,paths=/cash-ins/ci_outage',
    // UNAVAILABLE with RetryInfo (the sandbox answers 503 for that id: an OMS outage).
    [`GetCashIn ${outageId}`, 'GetCashIn', { cashInId: outageId }],
  ];
  for (const [label, method, request] of failing) {
    try {
      await unary(cashIns, method, request);
      console.log(`${label}: unexpectedly OK`);
    } catch (err) {
      printError(label, err);
    }
  }
  for (const c of [locations, cashIns, sandbox]) c.close();
}

main().catch((err) => {
  console.error(`example failed: ${err.code !== undefined ? grpc.status[err.code] : ''} ${err.message}`);
  process.exit(1);
});
