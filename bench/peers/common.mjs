// Shared by the peer scripts of pipeweave-bench (bench/src/peers.rs runs
// them with the Node 22 it installs). Each script takes one JSON argument:
//
//   {"url": "postgres://…", "mode": "throughput" | "latency", "config": "…",
//    "jobs": N, "chunk": N, "batch": N, "clients": N,
//    "latencyRuns": N, "warmup": N, "pauseMs": N}
//
// and prints one line of JSON with its figures to stdout, last. Everything
// else goes to stderr.

import pg from "pg";

export function parseArgs() {
  const raw = process.argv[2];
  if (!raw) {
    console.error("usage: node <script>.mjs '<json settings>'");
    process.exit(2);
  }
  return JSON.parse(raw);
}

export function emit(figures) {
  process.stdout.write(JSON.stringify(figures) + "\n");
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One statement on a connection of its own. */
export async function sql(url, text, values = []) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** VACUUM ANALYZE and CHECKPOINT, as the PipeWeave side does before a drain. */
export async function settle(url) {
  await sql(url, "vacuum analyze");
  await sql(url, "checkpoint");
}

/** Polls `query` (a count) every 5 ms until it answers 0. */
export async function waitForZero(url, query) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    for (;;) {
      const rows = (await client.query(query)).rows;
      if (Number(rows[0].count) === 0) return;
      await sleep(5);
    }
  } finally {
    await client.end();
  }
}

/** A latch the handler opens: `wait()` resolves with the instant it was opened. */
export function latch() {
  let open;
  const opened = new Promise((resolve) => (open = resolve));
  return { open: () => open(performance.now()), wait: () => opened };
}

/**
 * Idle enqueue-to-start latency: `warmup` + `runs` single jobs, one at a
 * time. `enqueue()` adds one job; `next()` returns the latch the handler
 * of that job opens when it starts, and `finished()` resolves once that
 * handler returned. Latency is from calling `enqueue` to the handler's
 * start; the queue is idle (`pauseMs`) between jobs.
 */
export async function latencyLoop({ warmup, runs, pauseMs }, enqueue, next, finished) {
  const samples = [];
  for (let i = 0; i < warmup + runs; i++) {
    const started = performance.now();
    const started_latch = next();
    await enqueue();
    const at = await started_latch.wait();
    await finished();
    if (i >= warmup) samples.push(at - started);
    await sleep(pauseMs);
  }
  samples.sort((a, b) => a - b);
  const q = (p) => samples[Math.min(samples.length - 1, Math.round((samples.length - 1) * p))];
  return { latencyP50Ms: q(0.5), latencyP99Ms: q(0.99), latencyMaxMs: q(1), latencyRuns: runs };
}
