#!/usr/bin/env python3
"""A plain HTTP worker for PipeWeave, in Python with only the standard library.

It binds an HTTP server, registers its tasks with the orchestrator
(`POST /api/register`), then receives dispatches at `POST /tasks/{taskId}`.
Each dispatch is answered `202 Accepted` at once and run on its own thread;
while it runs the worker sends heartbeats, and when it ends it reports the
result with a callback. docs/protocol.md describes the protocol.

    python3 examples/python-worker/worker.py --orchestrator http://127.0.0.1:3000

The task `report` writes its output to object storage itself, through the
dispatch's storage token (storage.py; it needs `pip install cryptography
boto3` and the deployment's PIPEWEAVE_SECRET_KEY), and returns it by path.
An input over 64 KiB arrives by path (`inputPath`) and is read the same way
before any task runs.

Once registered it prints one line, `listening on http://HOST:PORT`, to stdout;
everything else goes to stderr. `GET /health` answers `{"ok": true}` and
`GET /stats` reports executions per run and concurrency per task, for tests.
"""

import argparse, hashlib, inspect, json, os, sys, threading, time
import urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import storage

# The deployment's PIPEWEAVE_SECRET_KEY (64 hex digits), for storage tokens.
SECRET_KEY = None


class TaskError(Exception):
    """A task's own failure; the next attempt sees `code` in previousAttempts."""
    def __init__(self, message, code=None, retryable=True):
        super().__init__(message)
        self.message, self.code, self.retryable = message, code, retryable


def log(*parts):
    """One line to stderr, written at once so that threads do not interleave."""
    sys.stderr.write(" ".join(["[python-worker]", *map(str, parts)]) + "\n")
    sys.stderr.flush()


def task_input(dispatch):
    return dispatch.get("initialInput") or {}


def open_grant(dispatch):
    """The grant of the dispatch's storage token (storage.py)."""
    if not SECRET_KEY:
        raise TaskError("set PIPEWEAVE_SECRET_KEY (or --secret-key) to open storage tokens",
                        code="NO_SECRET_KEY", retryable=False)
    try:
        return storage.open_token(dispatch["storageToken"], SECRET_KEY)
    except ImportError as error:
        raise TaskError("this task needs `pip install cryptography boto3`: %s" % error,
                        code="MISSING_DEPENDENCY", retryable=False)


def hydrate(dispatch):
    """Puts a stored input (`inputPath`, for inputs over 64 KiB) in
    `initialInput`, read through the storage token, so tasks see one shape."""
    path = dispatch.get("inputPath")
    if path:
        dispatch["initialInput"] = json.loads(storage.get(open_grant(dispatch), path))


# --- The tasks: each receives the dispatch and returns its output. ----------

def greet(dispatch):
    """Greets {"name": str}."""
    return {"greeting": "Hello, %s!" % task_input(dispatch).get("name", "world")}

def flaky(dispatch):
    """Fails with FLAKY while attempt <= failTimes, then succeeds."""
    attempt = dispatch["attempt"]
    if attempt <= task_input(dispatch).get("failTimes", 0):
        raise TaskError("flaky failure on attempt %d" % attempt, code="FLAKY")
    codes = [p.get("errorCode") for p in dispatch.get("previousAttempts") or []]
    return {"attempt": attempt, "previousErrorCodes": codes}

def always_fails(dispatch):
    """Always fails with a retryable ALWAYS error."""
    raise TaskError("this task always fails", code="ALWAYS")

def fatal(dispatch):
    """Fails with a non-retryable BAD_INPUT error."""
    raise TaskError("bad input", code="BAD_INPUT", retryable=False)

def sleep(dispatch):
    """Sleeps {"ms": n} milliseconds."""
    ms = task_input(dispatch).get("ms", 0)
    time.sleep(ms / 1000)
    return {"slept": ms}

def limited(dispatch):
    """Sleeps {"ms": n} milliseconds (default 200) under a concurrency limit."""
    time.sleep(task_input(dispatch).get("ms", 200) / 1000)
    return {"ok": True}

def noop(dispatch):
    """Does nothing."""
    return {}

class ByReference:
    """An output the task wrote to object storage itself."""
    def __init__(self, path, size):
        self.path, self.size = path, size

def report(dispatch):
    """Writes a report of {"lines": n} lines to object storage through the
    attempt's storage token, and returns it by reference."""
    grant = open_grant(dispatch)
    lines = ["line %d" % i for i in range(task_input(dispatch).get("lines", 3))]
    data = json.dumps({"lines": lines}).encode()
    path = "runs/%s/outputs/%s.json" % (dispatch["runId"], dispatch["runId"])
    storage.put(grant, path, data)
    return ByReference(path, len(data))


def extract_tables(dispatch):
    """The PDF pipeline's `extract-tables` (examples/pdf-pipeline): reads the
    document `download` stored, through the storage token, and counts its
    table rows."""
    asset = ((dispatch.get("upstreamRefs") or {}).get("download") or {}).get("assets", {}).get("pdf-file")
    if not asset:
        raise TaskError("no pdf-file asset from download", code="MISSING_UPSTREAM", retryable=False)
    document = storage.get(open_grant(dispatch), asset["path"]).decode()
    return {"rows": sum(1 for line in document.splitlines() if line.startswith("|"))}

def notify(dispatch):
    """The PDF pipeline's `notify`: 'sends' the summary (logs it)."""
    summary = ((dispatch.get("upstreamRefs") or {}).get("summarize") or {}).get("output") or {}
    log("notify:", summary.get("summary"))
    return {"notified": summary.get("summary")}


# Options of every task unless it says otherwise (timeout in seconds).
DEFAULTS = {"timeout": 300, "retries": 3, "retryDelayMs": 100, "retryBackoff": "fixed",
            "heartbeatIntervalMs": 1000, "concurrency": 0}

def task_table(limit_concurrency, sleep_heartbeat_ms=300):
    """Task id -> (handler, registered options)."""
    return {
        "greet": (greet, {"retries": 0}),
        "flaky": (flaky, {}),
        "always-fails": (always_fails, {"retries": 2, "retryDelayMs": 50,
                                        "retryBackoff": "exponential"}),
        "fatal": (fatal, {"retries": 5}),
        "sleep": (sleep, {"heartbeatIntervalMs": sleep_heartbeat_ms, "timeout": 60}),
        "limited": (limited, {"concurrency": limit_concurrency}),
        "noop": (noop, {}),
        "report": (report, {"retries": 0}),
        "extract-tables": (extract_tables, {"allowedNext": ["summarize"]}),
        "notify": (notify, {}),
    }


def descriptor(task_id, handler, options):
    """What registration sends for one task; codeHash is the SHA-256 of the
    handler's source, so editing a handler bumps its codeVersion."""
    source = inspect.getsource(handler).encode()
    return {"id": task_id, "codeHash": hashlib.sha256(source).hexdigest(),
            "description": inspect.getdoc(handler), **DEFAULTS, **options}


class Stats:
    """Executions per run and running/maximum bodies per task, thread-safe."""
    def __init__(self, task_ids):
        self.lock, self.executions = threading.Lock(), {}
        self.running = dict.fromkeys(task_ids, 0)
        self.max_concurrent = dict.fromkeys(task_ids, 0)

    def started(self, task_id, run_id):
        with self.lock:
            self.executions[run_id] = self.executions.get(run_id, 0) + 1
            self.running[task_id] += 1
            self.max_concurrent[task_id] = max(self.max_concurrent[task_id],
                                               self.running[task_id])

    def finished(self, task_id):
        with self.lock:
            self.running[task_id] -= 1

    def snapshot(self):
        with self.lock:
            return {"executions": dict(self.executions),
                    "maxConcurrent": dict(self.max_concurrent),
                    "running": dict(self.running)}


# The orchestrator is reached directly, whatever *_proxy variables say.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_json(url, body, timeout=10, api_key=None):
    """POSTs JSON; returns (status, parsed answer or None). Raises OSError
    when the orchestrator cannot be reached. `api_key` goes in an
    Authorization header (only registration needs it: heartbeats and
    callbacks carry the attempt's token)."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers=headers)
    try:
        with OPENER.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def heartbeat_loop(dispatch, stop, abandoned):
    """Every heartbeatIntervalMs until `stop`; sets `abandoned` when the
    orchestrator says cancel or 409 (the attempt was superseded)."""
    body = {k: dispatch[k] for k in ("runId", "attempt", "attemptToken")}
    while not stop.wait(dispatch.get("heartbeatIntervalMs", 1000) / 1000):
        try:
            status, answer = post_json(dispatch["heartbeatUrl"], body)
        except OSError as error:
            log("heartbeat for", body["runId"], "failed:", error)
            continue
        if status == 409 or (status < 300 and (answer or {}).get("cancel")):
            log("attempt", body["attempt"], "of", body["runId"], "is cancelled or superseded")
            abandoned.set()
            return
        if status >= 300:
            log("heartbeat for", body["runId"], "answered", status, answer)


def send_callback(url, body, abandoned):
    """POSTs the callback, retrying for up to 120 s while the orchestrator
    is unreachable or answers 5xx or 429; any other 4xx is final, and so is
    a heartbeat's cancel or 409 (`abandoned`)."""
    delay, deadline = 0.2, time.monotonic() + 120
    while True:
        try:
            status, answer = post_json(url, body)
            if status < 300:
                log("callback", url, "->", answer)
                return
            if status < 500 and status != 429:
                log("callback", url, "refused with", status, answer)
                return
            problem = "HTTP %d %s" % (status, answer)
        except OSError as error:
            problem = str(error)
        if time.monotonic() + delay > deadline:
            log("giving up on callback", url, "after:", problem)
            return
        log("callback", url, "failed (%s); retrying in %.1f s" % (problem, delay))
        if abandoned.wait(delay):
            log("callback", url, "dropped: the attempt was cancelled or superseded")
            return
        delay = min(delay * 2, 2.0)


def run_attempt(task_id, handler, dispatch, stats):
    """Runs the task body, then calls back. Heartbeats go on until the
    callback is delivered, so a slow delivery does not lose the attempt."""
    stop, abandoned = threading.Event(), threading.Event()
    threading.Thread(target=heartbeat_loop, args=(dispatch, stop, abandoned), daemon=True).start()
    stats.started(task_id, dispatch["runId"])
    try:
        hydrate(dispatch)
        output = handler(dispatch)
        if isinstance(output, ByReference):
            result = {"status": "success", "outputPath": output.path, "outputSize": output.size}
        else:
            json.dumps(output)  # an output that is not JSON fails here, as EXCEPTION
            result = {"status": "success", "output": output}
    except TaskError as error:
        result = {"status": "failure", "error": {
            "message": error.message, "code": error.code, "retryable": error.retryable}}
    except Exception as error:  # pylint: disable=broad-except
        result = {"status": "failure", "error": {"message": "%s: %s" % (type(error).__name__, error),
                                                 "code": "EXCEPTION", "retryable": True}}
    finally:
        stats.finished(task_id)
    result.update(attempt=dispatch["attempt"], attemptToken=dispatch["attemptToken"])
    try:
        if abandoned.is_set():
            log("not calling back for abandoned attempt", dispatch["attempt"], "of", dispatch["runId"])
        else:
            send_callback(dispatch["callbackUrl"], result, abandoned)
    finally:
        stop.set()


REQUIRED = ("runId", "attempt", "attemptToken", "callbackUrl", "heartbeatUrl")


class Handler(BaseHTTPRequestHandler):
    server_version = "pipeweave-python-worker/0.1"

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass  # dispatches are logged below; access logs would drown them

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, {"ok": True})
        elif self.path == "/stats":
            self.reply(200, self.server.stats.snapshot())
        else:
            self.reply(404, {"error": "no route GET %s" % self.path})

    def do_POST(self):
        task_id = self.path[len("/tasks/"):] if self.path.startswith("/tasks/") else None
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if task_id is None:
            return self.reply(404, {"error": "no route POST %s" % self.path})
        if task_id not in self.server.tasks:
            return self.reply(404, {"error": "unknown task %r" % task_id})
        try:
            dispatch = json.loads(raw)
            missing = [k for k in REQUIRED if k not in dispatch]
        except (ValueError, TypeError) as error:
            return self.reply(400, {"error": "body: %s" % error})
        if missing:
            return self.reply(400, {"error": "%s: missing" % missing[0]})
        self.reply(202, {"accepted": True})
        log("dispatch", task_id, dispatch["runId"], "attempt", dispatch["attempt"])
        handler = self.server.tasks[task_id][0]
        threading.Thread(target=run_attempt, daemon=True,
                         args=(task_id, handler, dispatch, self.server.stats)).start()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 is small for a burst of dispatches


def register(orchestrator, body, api_key=None):
    """POSTs the registration every 0.5 s until it succeeds, for up to 30 s."""
    url, deadline = orchestrator.rstrip("/") + "/api/register", time.monotonic() + 30
    while True:
        try:
            status, answer = post_json(url, body, api_key=api_key)
            if status < 300:
                return answer
            if status < 500:
                sys.exit("registration refused with %d: %s" % (status, answer))
            problem = "HTTP %d %s" % (status, answer)
        except OSError as error:
            problem = str(error)
        if time.monotonic() >= deadline:
            sys.exit("cannot register with %s: %s" % (url, problem))
        time.sleep(0.5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orchestrator", default=os.environ.get(
        "PIPEWEAVE_ORCHESTRATOR_URL", "http://127.0.0.1:3000"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--service-id", default="python-worker")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--limit-concurrency", type=int, default=2,
                        help="the concurrency declared for the `limited` task")
    parser.add_argument("--sleep-heartbeat-ms", type=int, default=300,
                        help="the heartbeat interval declared for the `sleep` task")
    parser.add_argument("--api-key", default=os.environ.get("PIPEWEAVE_API_KEY"),
                        help="the orchestrator's API key, if it requires one to register")
    parser.add_argument("--secret-key", default=os.environ.get("PIPEWEAVE_SECRET_KEY"),
                        help="the deployment's PIPEWEAVE_SECRET_KEY, which opens storage tokens")
    args = parser.parse_args()
    global SECRET_KEY
    SECRET_KEY = args.secret_key
    tasks = task_table(args.limit_concurrency, args.sleep_heartbeat_ms)
    server = Server((args.host, args.port), Handler)
    server.tasks, server.stats = tasks, Stats(tasks)
    base_url = "http://%s:%d" % (args.host, server.server_address[1])
    answer = register(args.orchestrator, {
        "serviceId": args.service_id, "version": args.version, "baseUrl": base_url,
        "tasks": [descriptor(i, h, o) for i, (h, o) in tasks.items()]}, args.api_key)
    for change in (answer or {}).get("codeChanges", []):
        log("code changed: %(taskId)s v%(oldVersion)s -> v%(newVersion)s" % change)
    log("registered", args.service_id, args.version, "with", args.orchestrator)
    print("listening on", base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
