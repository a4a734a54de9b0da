"""`kubectl simtask`: submit, wait for, steer and inspect SimulationTasks and batches.

Installed as the console script `kubectl-simtask`, so kubectl runs it as a plugin. Every
command is a thin layer over `simtask.sdk`; what it prints comes from `simtask.cli.format`.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

import click
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from simtask.cli import format as fmt
from simtask.durations import parse_duration
from simtask.lifecycle import ALWAYS_TERMINAL
from simtask.sdk import queue as sdk_queue
from simtask.sdk.batch import Batch, BatchSummary
from simtask.sdk.client import BATCHES, TASKS, Client, NotFoundError, SimTaskError
from simtask.sdk.outcome import Change
from simtask.sdk.task import Task
from simtask.sdk.waiting import DELETED, Ref, WaitTimeout, wait_for

F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: kubectl's names of our kinds, for `kind/name` arguments.
_KIND_PREFIXES = {
    **dict.fromkeys(
        ("simtask", "simtasks", "st", "simulationtask", "simulationtasks", "task"), TASKS
    ),
    **dict.fromkeys(
        ("simbatch", "simbatches", "sb", "simulationbatch", "simulationbatches", "batch"), BATCHES
    ),
}


def fail(message: str, code: int = fmt.EXIT_ERROR) -> NoReturn:
    """Say what went wrong on stderr and exit with `code`."""
    err.print(f"[red]error:[/red] {escape(message)}")
    sys.exit(code)


# --- kubectl's flags -----------------------------------------------------------------


def connection_options(f: F) -> F:
    """--kubeconfig, --context, -n/--namespace: as kubectl has them."""
    f = click.option("-n", "--namespace", default=None, help="Namespace (default: the context's).")(
        f
    )
    f = click.option("--context", default=None, help="The kubeconfig context to use.")(f)
    f = click.option(
        "--kubeconfig",
        default=None,
        envvar="KUBECONFIG",
        help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).",
    )(f)
    return f


def output_option(f: F) -> F:
    """-o json|yaml for scripts."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["json", "yaml"]),
        default=None,
        help="Print machine-readable json or yaml instead of the human view.",
    )(f)


def selector_options(f: F) -> F:
    """-l/--selector and -A/--all-namespaces."""
    f = click.option(
        "-A",
        "--all-namespaces",
        is_flag=True,
        help="Every namespace you may read (with -l, or for queue).",
    )(f)
    f = click.option(
        "-l", "--selector", default=None, help="Label selector, e.g. -l study=pipe-flow."
    )(f)
    return f


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Client:
    """The user's connection; `namespace` replaces the context's default."""
    path = kubeconfig.split(":")[0] if kubeconfig else None
    client = Client.connect(path, context)
    if namespace:
        client.namespace = namespace
    return client


def timeout_seconds(value: str | None) -> float | None:
    """--timeout as seconds (kubectl's duration syntax: 30s, 5m, 2h; 0 or none: forever)."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value if value[-1:].isalpha() else value + "s").total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from None
    return seconds or None


def emit(data: Any, output: str | None) -> None:
    """Print `data` as json or yaml."""
    if output == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    else:
        click.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def user_errors() -> Iterator[None]:
    """SimTaskErrors become a message and exit 2; Ctrl-C exits 130; never a traceback."""
    try:
        yield
    except SimTaskError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


def resolve(client: Client, name: str, namespace: str | None = None) -> Ref:
    """`NAME`, `simtask/NAME` or `simbatch/NAME` (kubectl's short names work too)."""
    ns = namespace or client.namespace
    if "/" in name:
        prefix, _, bare = name.partition("/")
        kind = _KIND_PREFIXES.get(prefix.lower().split(".")[0])
        if kind is None:
            fail(f"{prefix!r} is not a kind kubectl simtask handles (simtask/NAME, simbatch/NAME)")
        client.get(kind, ns, bare)
        return Ref(kind, ns, bare)
    for kind in (TASKS, BATCHES):
        try:
            client.get(kind, ns, name)
        except NotFoundError:
            continue
        return Ref(kind, ns, name)
    raise NotFoundError(f"no SimulationTask or SimulationBatch named {name!r} in namespace {ns}")


def selected(
    client: Client, names: tuple[str, ...], selector: str | None, all_namespaces: bool
) -> list[Ref]:
    """The objects named, or the tasks that `selector` selects."""
    if names and selector:
        raise click.UsageError("give names or -l, not both")
    if selector:
        tasks = Task.list(
            client.namespace, selector=selector, all_namespaces=all_namespaces, client=client
        )
        if not tasks:
            fail(f"no SimulationTask matches -l {selector}")
        return [Ref(TASKS, t.namespace, t.name) for t in tasks]
    if not names:
        raise click.UsageError("name at least one task or batch, or select with -l")
    return [resolve(client, name) for name in names]


# --- the commands --------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="simtask-operator", prog_name="kubectl simtask")
def cli() -> None:
    """Run simulations as SimulationTasks: submit, wait, logs, outputs, kill, hold, retry.

    \b
    kubectl simtask submit task.yaml --wait        create and follow to the end
    kubectl simtask wait sweep-0 sweep-1           exit 0 when all succeed, 1 if one fails
    kubectl simtask logs cavity -f                 the simulator's output as it runs
    kubectl simtask outputs cavity ./results       copy its /outputs here
    kubectl simtask history cavity                 transitions, attempts, compute
    kubectl simtask retry cavity                   run a failed task again

    Each command talks to the Kubernetes API with your kubeconfig and permissions, and
    takes kubectl's -n/--namespace, --context and --kubeconfig.
    """


def _print_change(change: Change) -> None:
    out.print(fmt.change_line(change))


class _BatchProgress:
    """A live progress bar per batch, on a terminal; status lines scroll above it."""

    def __init__(self, refs: list[Ref]) -> None:
        self.batches = [r for r in refs if r.kind is BATCHES]
        self.progress: Progress | None = None
        self.bars: dict[str, Any] = {}
        if self.batches and out.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=out,
            )

    def __enter__(self) -> _BatchProgress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def on_change(self, change: Change) -> None:
        _print_change(change)
        if self.progress is None or change.kind != BATCHES.kind:
            return
        counts = dict(change.counts)
        ended = sum(n for phase, n in counts.items() if phase in ALWAYS_TERMINAL)
        if change.name not in self.bars:
            self.bars[change.name] = self.progress.add_task(
                f"simbatch/{change.name}", total=counts.get("total", 0)
            )
        self.progress.update(self.bars[change.name], total=counts.get("total", 0), completed=ended)


def _wait_and_exit(
    client: Client, refs: list[Ref], timeout: float | None, output: str | None, from_start: bool
) -> NoReturn:
    """Follow `refs` to their ends, printing each change; exit with SPEC §8's code."""
    with _BatchProgress(refs) as progress:
        try:
            ended = wait_for(
                client,
                refs,
                timeout=timeout,
                on_change=None if output else progress.on_change,
                from_start=from_start,
            )
        except WaitTimeout as exc:
            err.print(f"timed out waiting for {', '.join(r.kind.ref(r.name) for r in exc.pending)}")
            if output:
                emit({r.name: p for r, p in exc.finished.items()}, output)
            sys.exit(fmt.EXIT_TIMEOUT)
    for ref in refs:
        if ended[ref] == DELETED:
            err.print(f"{ref.kind.ref(ref.name)} was deleted")
    if output:
        emit({r.name: p for r, p in ended.items()}, output)
    sys.exit(fmt.exit_code(ended.values()))


def _manifests(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d]
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except yaml.YAMLError as exc:
        fail(f"{path} is not valid YAML: {exc}")
    items: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            fail(f"{path}: every document must be an object, not {type(doc).__name__}")
        items += doc.get("items") or [] if doc.get("kind") == "List" else [doc]
    return items


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--wait", "wait_", is_flag=True, help="Follow them until they end; exit as wait.")
@click.option("--timeout", default=None, help="With --wait: give up after this long (exit 124).")
@connection_options
@output_option
def submit(
    file: str,
    wait_: bool,
    timeout: str | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    output: str | None,
) -> None:
    """Create the SimulationTasks and SimulationBatches of a manifest (FILE, or - for stdin).

    Unlike kubectl apply, `metadata.generateName` works: each submit makes new objects.

    \b
    kubectl simtask submit examples/quickstart.yaml
    kubectl simtask submit sweep.yaml --wait --timeout 12h
    sed s/RE/5000/ template.yaml | kubectl simtask submit - -n cfd
    """
    seconds = timeout_seconds(timeout)
    docs = _manifests(file)
    with user_errors():
        client = connect(kubeconfig, context, namespace)
        refs: list[Ref] = []
        created: list[dict[str, Any]] = []
        for doc in docs:
            kind = {TASKS.kind: TASKS, BATCHES.kind: BATCHES}.get(str(doc.get("kind")))
            if kind is None:
                fail(
                    f"{file}: kind {doc.get('kind')!r} is neither SimulationTask "
                    "nor SimulationBatch"
                )
            meta = doc.setdefault("metadata", {})
            if namespace and meta.get("namespace") not in (None, namespace):
                fail(
                    f"{file}: {meta.get('name')} is for namespace {meta['namespace']}, "
                    f"not {namespace}"
                )
            ns = meta.get("namespace") or client.namespace
            obj = client.create(kind, ns, doc)
            created.append(obj)
            refs.append(Ref(kind, ns, obj["metadata"]["name"]))
            if not output:
                out.print(f"{kind.ref(obj['metadata']['name'])} created")
        if not wait_:
            if output:
                emit(created if len(created) != 1 else created[0], output)
            return
        _wait_and_exit(client, refs, seconds, output, from_start=True)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--timeout", default=None, help="Give up after this long (30s, 5m, 2h): exit 124.")
@connection_options
@selector_options
@output_option
def wait(
    names: tuple[str, ...],
    timeout: str | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    selector: str | None,
    all_namespaces: bool,
    output: str | None,
) -> None:
    """Wait for tasks or batches to end, printing each status change as it happens.

    Exit 0 when all end in Success, 1 when one ends in anything else, 124 on --timeout.
    Ctrl-C stops waiting and leaves them running.

    \b
    kubectl simtask wait cavity
    kubectl simtask wait -l study=pipe-flow --timeout 12h
    kubectl simtask wait simbatch/sweep && echo all good
    """
    seconds = timeout_seconds(timeout)
    with user_errors():
        client = connect(kubeconfig, context, namespace)
        refs = selected(client, names, selector, all_namespaces)
        _wait_and_exit(client, refs, seconds, output, from_start=False)


def _task_of(client: Client, name: str, index: int | None) -> Task:
    ref = resolve(client, name)
    if ref.kind is BATCHES:
        if index is None:
            fail(f"simbatch/{ref.name} is a batch: choose an instance with --index I")
        return Batch.get(ref.name, ref.namespace, client=client).task(index)
    if index is not None:
        fail(f"simtask/{ref.name} is a task, not a batch: --index does not apply")
    return Task(client.get(TASKS, ref.namespace, ref.name), client=client)


@cli.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they are written.")
@click.option(
    "--attempt",
    type=click.IntRange(min=1),
    default=None,
    help="Attempt N (default: the current one).",
)
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
@click.option("--index", type=click.IntRange(min=0), default=None, help="For a batch: instance I.")
@connection_options
def logs(
    name: str,
    follow: bool,
    attempt: int | None,
    tail: int | None,
    index: int | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """Print the simulator's log of a task's current attempt (or of --attempt N).

    While the pod exists its log is read from it; once the pod is gone, from the log the
    operator kept (spec.keepLogs: failed attempts by default).

    \b
    kubectl simtask logs cavity -f
    kubectl simtask logs cavity --attempt 1 --tail 50
    kubectl simtask logs simbatch/sweep --index 17
    """
    with user_errors():
        client = connect(kubeconfig, context, namespace)
        task = _task_of(client, name, index)
        if follow:
            for line in task.follow_logs(attempt=attempt, tail=tail):
                click.echo(line, nl=False)
        else:
            click.echo(task.logs(attempt=attempt, tail=tail), nl=False)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the reader pod is cleaned up either way."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.command()
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--index", type=click.IntRange(min=0), default=None, help="For a batch: instance I.")
@click.option("--image", default=None, help="Reader image with sleep and tar (default busybox).")
@click.option("--timeout", default="5m", help="How long the reader pod may take to start.")
@connection_options
def outputs(
    name: str,
    directory: str,
    index: int | None,
    image: str | None,
    timeout: str,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
) -> None:
    """Copy a task's /outputs (its spec.outputs claim) into DIRECTORY.

    A short-lived reader pod mounts the claim read-only; tar streams the files out through
    the API server; the pod is deleted afterwards, also on Ctrl-C. With a ReadWriteOnce
    claim, a running task's node is used.

    \b
    kubectl simtask outputs cavity ./cavity-results
    """
    seconds = timeout_seconds(timeout) or 300.0
    with user_errors(), _sigterm_as_interrupt():
        client = connect(kubeconfig, context, namespace)
        task = _task_of(client, name, index)
        target = task.download_outputs(directory, image=image, start_timeout=seconds)
        files = sum(1 for p in target.rglob("*") if p.is_file())
        out.print(escape(f"simtask/{task.name}: {files} file(s) in {target}"))


def _spec_command(verb: str, doc: str) -> None:
    @cli.command(name=verb, help=doc)
    @click.argument("names", nargs=-1)
    @connection_options
    @selector_options
    def command(
        names: tuple[str, ...],
        kubeconfig: str | None,
        context: str | None,
        namespace: str | None,
        selector: str | None,
        all_namespaces: bool,
    ) -> None:
        with user_errors():
            client = connect(kubeconfig, context, namespace)
            for ref in selected(client, names, selector, all_namespaces):
                cls = Batch if ref.kind is BATCHES else Task
                obj = cls(client.get(ref.kind, ref.namespace, ref.name), client=client)
                if verb == "retry" and selector and obj.phase == "Success":
                    out.print(f"{ref.kind.ref(ref.name)} succeeded: not retried")
                    continue
                if verb == "retry":
                    counter = obj.retry_failed() if isinstance(obj, Batch) else obj.retry()
                    out.print(f"{ref.kind.ref(ref.name)} retry requested (spec.retry={counter})")
                else:
                    getattr(obj, verb)()
                    done = {"kill": "kill requested", "hold": "held", "release": "released"}
                    out.print(f"{ref.kind.ref(ref.name)} {done[verb]}")


_spec_command(
    "kill",
    """Stop tasks or batches (spec.kill): they end Killed.

    \b
    kubectl simtask kill cavity
    kubectl simtask kill -l study=pipe-flow
    """,
)
_spec_command(
    "hold",
    """Keep tasks or batches from starting (spec.hold) until released.

    \b
    kubectl simtask hold cavity
    """,
)
_spec_command(
    "release",
    """Let held tasks or batches start (spec.hold: false).

    \b
    kubectl simtask release cavity
    """,
)
_spec_command(
    "retry",
    """Run ended tasks again as a new attempt; for a batch, its instances that did not
    succeed. Raises spec.retry with a precondition, so concurrent retries all count.

    \b
    kubectl simtask retry cavity
    kubectl simtask retry simbatch/sweep
    """,
)


@cli.command()
@click.argument("name")
@connection_options
@output_option
def history(
    name: str,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    output: str | None,
) -> None:
    """Show a task's transitions, attempts, durations and compute.

    \b
    kubectl simtask history cavity
    kubectl simtask history cavity -o json | jq '.attempts[].cpuSeconds'
    """
    with user_errors():
        client = connect(kubeconfig, context, namespace)
        task = Task.get(name.rpartition("/")[2], client=client)
        if output:
            status = task.obj.get("status") or {}
            emit(
                {
                    "name": task.name,
                    "namespace": task.namespace,
                    "phase": status.get("phase"),
                    "history": status.get("history") or [],
                    "attempts": status.get("attempts") or [],
                },
                output,
            )
            return
        for part in fmt.history_tables(task.obj):
            out.print(part)


@cli.command()
@click.argument("group", required=False)
@connection_options
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace you may read.")
@output_option
def queue(
    group: str | None,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    all_namespaces: bool,
    output: str | None,
) -> None:
    """List the tasks waiting for a MachineGroup's quota, next to start first.

    Positions count across namespaces; without -A only the namespace's tasks are shown.

    \b
    kubectl simtask queue gpu-a100 -A
    """
    with user_errors():
        client = connect(kubeconfig, context, namespace)
        tasks = sdk_queue(group, all_namespaces=all_namespaces, client=client)
        if output:
            emit([t.obj for t in tasks], output)
            return
        if not tasks:
            where = "any namespace" if all_namespaces else f"namespace {client.namespace}"
            out.print(f"no task waits for {group or 'a MachineGroup'} in {where}")
            return
        out.print(fmt.queue_table([t.obj for t in tasks]))


@cli.command()
@click.argument("name")
@connection_options
@output_option
def summary(
    name: str,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    output: str | None,
) -> None:
    """Show a batch's instance counts and index ranges.

    \b
    kubectl simtask summary sweep
    kubectl simtask summary sweep -o json | jq -r .failedIndexes
    """
    with user_errors():
        client = connect(kubeconfig, context, namespace)
        bare = name.rpartition("/")[2]
        result: BatchSummary = Batch.get(bare, client=client).summary()
        if output:
            data = dict(vars(result))
            for key in ("start_time", "completion_time"):
                data[key] = data[key].isoformat() if data[key] else None
            emit(data, output)
            return
        out.print(fmt.summary_table(result))


def main() -> None:
    """The console script."""
    cli(prog_name="kubectl simtask")


if __name__ == "__main__":
    main()
