// graphile-worker 0.18 doing no-op jobs, for pipeweave-bench (see common.mjs).
//
// config "default": graphile-worker's defaults (concurrency 1, pool of 10,
// no local queue, one completion statement per job).
// config "tuned": the configuration of graphile-worker's own performance
// page: concurrency 24, pool of 25, localQueue of 500, completion and
// failure batching with a delay of 0 ms.
//
// In both, the logger keeps only warnings and errors: graphile-worker logs
// every job at info level by default, and the PipeWeave side of the
// benchmark logs nothing per run.

import { run, makeWorkerUtils, Logger } from "graphile-worker";
import { parseArgs, emit, settle, waitForZero, latch, latencyLoop } from "./common.mjs";

const args = parseArgs();
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile-worker] ${level}: ${message}`);
});
const configs = {
  default: {},
  tuned: {
    concurrency: 24,
    maxPoolSize: 25,
    preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
  },
};
const config = configs[args.config];
if (!config) throw new Error(`unknown config ${args.config}`);
const options = { connectionString: args.url, logger, noHandleSignals: true, crontab: "", ...config };

const utils = await makeWorkerUtils({ connectionString: args.url, logger });
await utils.migrate();

if (args.mode === "throughput") {
  const jobs = args.jobs;
  const enqueueStarted = performance.now();
  for (let done = 0; done < jobs; done += args.chunk) {
    const n = Math.min(args.chunk, jobs - done);
    await utils.addJobs(Array.from({ length: n }, () => ({ identifier: "noop", payload: {} })));
  }
  const enqueueSeconds = (performance.now() - enqueueStarted) / 1000;
  await settle(args.url);
  let handled = 0;
  const all = latch();
  const taskList = {
    noop: async () => {
      if (++handled === jobs) all.open();
    },
  };
  const started = performance.now();
  const runner = await run({ ...options, taskList });
  await all.wait();
  // Done when every job is completed (deleted), not only handled.
  await waitForZero(args.url, "select count(*) from graphile_worker._private_jobs");
  const seconds = (performance.now() - started) / 1000;
  await runner.stop();
  await utils.release();
  emit({ jobs, jobsPerSec: jobs / seconds, seconds, enqueueJobsPerSec: jobs / enqueueSeconds });
} else if (args.mode === "latency") {
  let current = latch();
  let done = Promise.resolve();
  let finish = () => {};
  const taskList = {
    noop: async () => {
      current.open();
      finish();
    },
  };
  const runner = await run({ ...options, taskList });
  const figures = await latencyLoop(
    { warmup: args.warmup, runs: args.latencyRuns, pauseMs: args.pauseMs },
    () => utils.addJob("noop", {}),
    () => {
      current = latch();
      done = new Promise((resolve) => (finish = resolve));
      return current;
    },
    () => done,
  );
  await runner.stop();
  await utils.release();
  emit(figures);
} else {
  throw new Error(`unknown mode ${args.mode}`);
}
process.exit(0);
