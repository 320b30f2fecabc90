// pg-boss 12 doing no-op jobs, for pipeweave-bench (see common.mjs).
//
// One queue with LISTEN/NOTIFY on (`useListenNotify`, queue `notify`), and
// a worker with batch fetching: `batchSize` jobs per fetch (the batch size
// the PipeWeave side claims), `clients` fetch loops (`localConcurrency`,
// PipeWeave's claim loops), fetching again at once while batches come back
// full (`burstWhenBatchFull`), and otherwise pg-boss's defaults. The
// handler gets the batch and returns, which completes the whole batch in
// one statement.

import { PgBoss } from "pg-boss";
import { parseArgs, emit, settle, waitForZero, latch, latencyLoop } from "./common.mjs";

const args = parseArgs();
const QUEUE = "noop";
const boss = new PgBoss({ connectionString: args.url, useListenNotify: true });
boss.on("error", (error) => console.error(`[pg-boss] error: ${error?.stack ?? error}`));
await boss.start();
await boss.createQueue(QUEUE, { notify: true });
const workOptions = {
  batchSize: args.batch,
  localConcurrency: args.clients,
  pollingIntervalSeconds: 0.5,
  burstWhenBatchFull: true,
};

if (args.mode === "throughput") {
  const jobs = args.jobs;
  const enqueueStarted = performance.now();
  for (let done = 0; done < jobs; done += args.chunk) {
    const n = Math.min(args.chunk, jobs - done);
    await boss.insert(QUEUE, Array.from({ length: n }, () => ({ data: {} })));
  }
  const enqueueSeconds = (performance.now() - enqueueStarted) / 1000;
  await settle(args.url);
  let handled = 0;
  const all = latch();
  const started = performance.now();
  await boss.work(QUEUE, workOptions, async (batch) => {
    handled += batch.length;
    if (handled >= jobs) all.open();
  });
  await all.wait();
  await waitForZero(
    args.url,
    `select count(*) from pgboss.job where name = '${QUEUE}' and state <> 'completed'`,
  );
  const seconds = (performance.now() - started) / 1000;
  await boss.stop({ graceful: false, timeout: 1000 });
  emit({ jobs, jobsPerSec: jobs / seconds, seconds, enqueueJobsPerSec: jobs / enqueueSeconds });
} else if (args.mode === "latency") {
  let current = latch();
  let done = Promise.resolve();
  let finish = () => {};
  await boss.work(QUEUE, { ...workOptions, batchSize: 1, localConcurrency: 1 }, async () => {
    current.open();
    finish();
  });
  const figures = await latencyLoop(
    { warmup: args.warmup, runs: args.latencyRuns, pauseMs: args.pauseMs },
    () => boss.send(QUEUE, {}),
    () => {
      current = latch();
      done = new Promise((resolve) => (finish = resolve));
      return current;
    },
    () => done,
  );
  await boss.stop({ graceful: false, timeout: 1000 });
  emit(figures);
} else {
  throw new Error(`unknown mode ${args.mode}`);
}
process.exit(0);
