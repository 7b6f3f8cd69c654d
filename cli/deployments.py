"""`fleet place`, `fleet deployments`, `fleet deployment describe`, `fleet remove`."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from fleet.cli.client import Client
from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import (
    EXIT_ERROR,
    EXIT_USAGE,
    Output,
    OutputOpt,
    Table,
    console,
    err_console,
    fail,
    gib,
    plain,
    print_json,
)
from fleet.proto import fleet_pb2 as pb

STATE_STYLE = {"healthy": "green", "starting": "yellow", "pending": "yellow", "failed": "red",
               "stopping": "blue", "stopped": "blue", "unknown": "red", "declared": "cyan"}
SERVING, DECLARED = "healthy", "declared"  # fleet.controller.core.replica_states


TERMS = ("weights", "kv_cache", "activations", "runtime", "total")


def memory_dict(m: pb.ReplicaMemory) -> dict[str, Any]:
    """Observed bytes per term (per GPU, or RAM on CPU); 0 = not measured or not logged by the engine."""
    return {**{t: getattr(m, t) for t in TERMS}, "ram": m.ram, "gpus": {g.uuid: g.bytes for g in m.gpus},
            "engine_version": m.engine_version or None, "measured_at": m.measured_at or None}


def _gpus(gpus: Any) -> list[dict[str, Any]]:
    return [{"uuid": g.gpu_uuid, "index": g.gpu_index, "reserved": g.bytes} for g in gpus]


def replica_dict(r: pb.Replica) -> dict[str, Any]:
    """`node` and `gpus` are the main node's; `nodes` lists every node the replica runs on, the main first."""
    out: dict[str, Any] = {
        "id": r.id, "ordinal": r.ordinal, "node": r.node, "nodes": [p.node for p in r.parts] or [r.node],
        "state": r.state, "endpoint": r.endpoint, "api_key": r.api_key, "tp": r.tp,
        "gpus": _gpus(r.gpus),
        "gpu_memory_utilization": round(r.gpu_memory_utilization, 4) if r.gpu_memory_utilization else None,
        "ram_reserved": r.ram_bytes, "restarts": r.restarts, "message": r.message,
        "observed": memory_dict(r.observed) if r.HasField("observed") else None,
        "over_reservation": r.over_reservation,
    }
    if r.parts:
        out["parts"] = [{"rank": p.rank, "node": p.node, "role": p.role, "id": p.id, "state": p.state,
                         "address": p.address, "gpus": _gpus(p.gpus), "ram_reserved": p.ram_bytes,
                         "restarts": p.restarts, "message": p.message} for p in r.parts]
    return out


def deployment_dict(d: pb.Deployment) -> dict[str, Any]:
    e = d.estimate
    return {
        "name": d.name, "model": d.model, "quant": d.quant, "engine": d.engine, "context": d.context,
        "device": d.device, "tp": d.tp, "strategy": d.strategy, "state": d.state, "source": d.source,
        "replicas_wanted": d.replicas_wanted, "created_at": d.created_at, "why": d.why,
        "estimate": {"weights": e.weights, "kv_cache": e.kv_cache, "activations": e.activations,
                     "runtime": e.runtime, "total": e.total},
        "reserved": d.reserved or None,
        "observed": ({"replicas": d.observed_replicas, **{t: getattr(d.observed, t) for t in TERMS}}
                     if d.observed_replicas else None),
        "launch_notes": list(d.launch_notes),
        "replicas": [replica_dict(r) for r in d.replicas],
    }


def observed_table(d: pb.Deployment) -> Table:
    """Estimate vs observed per term: the deployment's own replicas, and every replica of the same key."""
    unit = "per GPU" if d.device == "gpu" else "RAM"
    t = Table(title=f"memory {unit}, GiB (observed: largest of {d.observed_replicas} replica(s) of the same key)")
    measured = [r for r in d.replicas if r.HasField("observed")]
    for col in ("TERM", "ESTIMATE", "OBSERVED", *(f"#{r.ordinal} {r.node}" for r in measured)):
        t.add_column(col, justify="right" if col != "TERM" else "left")

    def cell(n: int) -> str:
        return gib(n) if n else "-"

    for term in TERMS:
        t.add_row(term.replace("_", " "), gib(getattr(d.estimate, term)), cell(getattr(d.observed, term)),
                  *(cell(getattr(r.observed, term)) for r in measured))
    return t


def gpus_text(r: pb.Replica | pb.ReplicaPart) -> str:
    if not r.gpus:
        return f"cpu ({gib(r.ram_bytes)} GiB RAM)"
    return ", ".join(f"{g.gpu_index}:{g.gpu_uuid[:12]}… {gib(g.bytes)} GiB" for g in r.gpus)


def _state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def replicas_table(d: pb.Deployment, dry_run: bool = False) -> Table:
    t = Table(title=f"{d.name}: {d.model} {d.quant} on {d.engine} "
                    + ("(dry run: nothing placed)" if dry_run else f"({d.state})"))
    for col in ("#", "NODE", "GPUS (reserved)", "STATE", "ENDPOINT", "RESTARTS"):
        t.add_column(col)
    for r in d.replicas:
        if not r.parts:
            t.add_row(str(r.ordinal), r.node, gpus_text(r), _state(r.state), plain(r.endpoint) or "-",
                      str(r.restarts))
            continue
        # A replica over several nodes: one row per part, the main first.
        for p in r.parts:
            where = f"{p.node} ({p.role})"
            t.add_row(str(r.ordinal) if p.rank == 0 else "", where, gpus_text(p), _state(p.state),
                      plain(r.endpoint or "-") if p.rank == 0 else plain(p.address or "-"), str(p.restarts))
    return t


def no_replicas(d: pb.Deployment) -> str:
    """A deployment with no replica row: being removed, or every replica gone (node removed, rescheduling)."""
    if d.state == "removing":
        return "[blue]removing[/]"
    return "[red]none[/] (the controller keeps trying to place them; `fleet events --deployment " + d.name + "`)"


def reserved_note(d: pb.Deployment) -> str:
    """Replicas on different GPU kinds reserve each kind's own estimate: say so when they differ."""
    per_node: dict[str, int] = {}
    for r in d.replicas:
        if r.gpus:
            per_node.setdefault(r.node, r.gpus[0].bytes)
    if len(set(per_node.values())) <= 1:
        return ""
    return "; reserved per GPU by node (each its GPUs' estimate): " + ", ".join(
        f"{node} {gib(b)} GiB" for node, b in per_node.items())


def verdicts_table(resp: pb.PlaceResponse) -> Table:
    t = Table(title="nodes considered")
    for col in ("NODE", "FIT", "SCORE", "GPUS", "REASON"):
        t.add_column(col)
    for v in resp.verdicts:
        t.add_row(v.node, "[green]yes[/]" if v.feasible else "[red]no[/]", str(v.score) if v.feasible else "-",
                  ",".join(map(str, v.gpus)) or "-", v.reason or "")
    return t


def wait_healthy(client: Client, name: str, timeout: float) -> pb.Deployment:
    """Poll until every replica that can serve is healthy (return) or one failed / time ran out (exit non-zero).

    Replicas on declared nodes never serve (nothing is launched there): they are not waited for and not
    counted as serving; if every replica is declared, nothing will ever serve and that is a failure.
    """
    from rich.live import Live

    deadline = time.monotonic() + timeout
    # progress goes to stderr: stdout stays the result (a table, or JSON for scripts)
    with Live(console=err_console, refresh_per_second=4, transient=True) as live:
        while True:
            d = client.call("DescribeDeployment", pb.DescribeDeploymentRequest(name=name)).deployment
            live.update(replicas_table(d))
            states = [r.state for r in d.replicas]
            declared = [r.node for r in d.replicas if r.state == DECLARED]
            if states and len(declared) == len(states):
                live.stop()
                fail(f"nothing of {name} will serve: every replica is on a declared node ({', '.join(declared)}), "
                     "accounted for planning and never launched", EXIT_ERROR)
            if states and all(s in (SERVING, DECLARED) for s in states):
                if declared:
                    err_console.print(f"{len(states) - len(declared)} of {len(states)} replica(s) serve; on declared "
                                      f"node(s) {', '.join(declared)} nothing is launched", highlight=False)
                return d
            failed = [r for r in d.replicas if r.state == "failed"]
            if failed:
                live.stop()
                r = failed[0]
                err_console.print(f"[bold red]error:[/] replica {r.ordinal} of {name} on {r.node} failed: "
                                  f"{plain(r.message)}",
                                  highlight=False)
                raise typer.Exit(EXIT_ERROR)
            if time.monotonic() > deadline:
                live.stop()
                fail(f"replicas of {name} not healthy after {timeout:.0f}s: "
                     + ", ".join(f"{r.node}={r.state}" for r in d.replicas), EXIT_ERROR)
            time.sleep(0.5)


def register(app: typer.Typer) -> None:
    dep_app = typer.Typer(help="One deployment in detail.", no_args_is_help=True)
    app.add_typer(dep_app, name="deployment")
    register_logs(app)

    @app.command("place")
    def place(
        model: Annotated[str, typer.Argument(help="catalog name, alias or HF repo id (see `fleet models`)")],
        quant: Annotated[str | None, typer.Option(help="awq, gptq, fp8, bf16, q4_k_m, …  [default: best that fits]")]
        = None,
        engine: Annotated[str | None, typer.Option(help="vllm or llama.cpp [default: the variant's]")] = None,
        replicas: Annotated[int, typer.Option(min=1, max=64)] = 1,
        nodes: Annotated[int | None, typer.Option(
            min=1, max=16, help="nodes each replica spans (TP inside a node, one part per node) "
                                "[default: one, or the fewest that fit when none does]")] = None,
        context: Annotated[int | None, typer.Option(help="context length [default: the model's, capped]")] = None,
        tp: Annotated[int | None, typer.Option(help="tensor-parallel size [default: the fewest GPUs that fit]")] = None,
        node: Annotated[str | None, typer.Option(help="only this node (this placement; a drain may move it)")] = None,
        gpu_type: Annotated[str | None, typer.Option(help="only GPUs of this type, e.g. A100-80GB")] = None,
        label: Annotated[list[str], typer.Option(help="node label constraint KEY=VALUE (repeatable)")] = [],  # noqa: B006
        device: Annotated[str, typer.Option(help="gpu, or cpu (llama.cpp in RAM, small models)")] = "gpu",
        strategy: Annotated[str, typer.Option(help="pack (keep big free blocks) or spread")] = "pack",
        name: Annotated[str | None, typer.Option(help="deployment name (default: MODEL-QUANT)")] = None,
        max_moves: Annotated[int, typer.Option(min=1, max=64, help="replicas a drain moves at once")] = 1,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="show the plan; change nothing")] = False,
        explain: Annotated[bool, typer.Option("--explain", help="list every node with its reason or score")] = False,
        trust_observed: Annotated[bool, typer.Option(
            "--trust-observed", help="reserve what replicas of the same key really used (+ margin), even below "
                                     "the estimate")] = False,
        wait: Annotated[bool, typer.Option("--wait", help="wait until every replica is healthy")] = False,
        timeout: Annotated[float, typer.Option(help="seconds --wait waits")] = 900.0,
        output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
        data_dir: DataDirOpt = None,
    ) -> None:
        """Place a deployment: estimate its memory, choose nodes and GPUs, reserve them, start the replicas.

        Exit code 2 when nothing fits (with the closest candidate), 1 when --wait sees a replica fail.
        """
        from fleet.cli.daemons import parse_labels

        if device not in ("gpu", "cpu"):
            fail("--device is gpu or cpu")
        if strategy not in ("pack", "spread"):
            fail("--strategy is pack or spread")
        client = Client(controller, token, data_dir)
        req = pb.PlaceRequest(model=model, quant=quant or "", engine=engine or "", replicas=replicas,
                              context=context or 0, tp=tp or 0, node=node or "", gpu_type=gpu_type or "",
                              labels=parse_labels(label), device=device, strategy=strategy, name=name or "",
                              dry_run=dry_run, max_moves=max_moves, explain=explain, trust_observed=trust_observed,
                              nodes=nodes or 0)
        resp = client.call("Place", req)
        if output == Output.json and not wait:
            print_json({"placed": resp.placed, "dry_run": dry_run, "summary": resp.summary, "notes": list(resp.notes),
                        "deployment": deployment_dict(resp.deployment) if resp.deployment.name else None,
                        "nodes": [{"node": v.node, "feasible": v.feasible, "score": v.score, "reason": v.reason,
                                   "gpus": list(v.gpus)} for v in resp.verdicts]})
            if not resp.placed:
                raise typer.Exit(EXIT_USAGE)
            return
        if not resp.placed:
            console.print(verdicts_table(resp))
            fail(resp.summary, EXIT_USAGE)
        d = resp.deployment
        say = err_console if output == Output.json else console  # with -o json, stdout is only the JSON
        for note in resp.notes:
            say.print(f"[dim]{note}[/]")
        e = d.estimate
        unit = "per GPU" if d.device == "gpu" else "of RAM"
        spans = max((len(r.parts) for r in d.replicas), default=0)
        shape = f"TP {d.tp}" + (f" × {spans} nodes" if spans > 1 else "")
        per = f"{unit} per node" if spans > 1 and d.device == "cpu" else unit
        say.print(f"{'would place' if dry_run else 'placed'} [bold]{d.name}[/]: {d.model} {d.quant} on {d.engine}, "
                  f"{shape}, context {d.context}; needs {gib(e.total)} GiB {per} (weights {gib(e.weights)}, "
                  f"KV {gib(e.kv_cache)}, activations {gib(e.activations)}, runtime {gib(e.runtime)})"
                  + reserved_note(d), highlight=False)
        if d.observed_replicas and d.reserved and d.reserved != e.total:
            say.print(f"reserves {gib(d.reserved)} GiB {unit}: observed on {d.observed_replicas} replica(s) of the "
                      f"same key, plus margin")
        for note in d.launch_notes:
            say.print(f"[dim]{note}[/]")
        if explain:
            say.print(verdicts_table(resp))
        if wait and not dry_run:
            d = wait_healthy(client, d.name, timeout)
        if output == Output.json:
            print_json(deployment_dict(d))
        else:
            console.print(replicas_table(d, dry_run=dry_run))

    @app.command("deployments")
    def deployments(output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
                    data_dir: DataDirOpt = None) -> None:
        """Every deployment with its replicas: node, GPUs, state, endpoint."""
        listed = [d for page in Client(controller, token, data_dir).pages("ListDeployments",
                                                                          pb.ListDeploymentsRequest())
                  for d in page.deployments]
        if output == Output.json:
            print_json([deployment_dict(d) for d in listed])
            return
        t = Table(title=f"{len(listed)} deployment(s)")
        for col in ("NAME", "MODEL", "QUANT", "ENGINE", "READY", "REPLICAS (node: state endpoint)"):
            t.add_column(col)
        for d in listed:
            ready = sum(r.state == SERVING for r in d.replicas)
            declared = sum(r.state == DECLARED for r in d.replicas)
            t.add_row(d.name, d.model, d.quant, d.engine,
                      f"{ready}/{d.replicas_wanted}" + (f" ({declared} declared)" if declared else ""),
                      "\n".join(f"{'+'.join(p.node for p in r.parts) or r.node}: "
                                f"[{STATE_STYLE.get(r.state, 'white')}]{r.state}[/] {r.endpoint}"
                                for r in d.replicas) or no_replicas(d))
        console.print(t)

    @dep_app.command("describe")
    def describe(name: str, output: OutputOpt = Output.table, controller: ControllerOpt = None,
                 token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
        """A deployment's estimate, replicas, reservations and last messages."""
        d = Client(controller, token, data_dir).call("DescribeDeployment",
                                                      pb.DescribeDeploymentRequest(name=name)).deployment
        if output == Output.json:
            print_json(deployment_dict(d))
            return
        e = d.estimate
        console.print(f"[bold]{d.name}[/]  {d.model} {d.quant} on {d.engine}  device {d.device}  TP {d.tp}  "
                      f"context {d.context}  source {d.source}")
        if d.why:
            console.print(f"chosen because: {d.why}")
        console.print(f"estimate per {'GPU' if d.device == 'gpu' else 'replica (RAM)'}: total {gib(e.total)} GiB = "
                      f"weights {gib(e.weights)} + KV {gib(e.kv_cache)} + activations {gib(e.activations)} + "
                      f"runtime {gib(e.runtime)}")
        if d.reserved and d.reserved != e.total:
            console.print(f"reserved per replica: {gib(d.reserved)} GiB (observed + margin)")
        for note in d.launch_notes:
            console.print(note)
        if d.observed_replicas or any(r.HasField("observed") for r in d.replicas):
            console.print(observed_table(d))
        console.print(replicas_table(d))
        for r in d.replicas:
            if r.over_reservation:
                console.print(f"[red]replica {r.ordinal} ({r.node}) uses more memory than it reserved: it can "
                              f"starve its neighbours[/]")
            if r.message:
                console.print(f"replica {r.ordinal} ({r.node}): {plain(r.message)}")
            for p in r.parts[1:]:
                if p.message:
                    console.print(f"replica {r.ordinal}, {p.role} on {p.node}: {plain(p.message)}")

    @app.command("remove")
    def remove(name: str,
               wait: Annotated[bool, typer.Option("--wait", help="wait until every replica stopped and it is gone")]
               = False,
               timeout: Annotated[float, typer.Option(help="seconds --wait waits")] = 300.0,
               output: OutputOpt = Output.table, controller: ControllerOpt = None, token: TokenOpt = None,
               data_dir: DataDirOpt = None) -> None:
        """Stop a deployment's replicas; their GPUs are freed once the agents report them stopped."""
        client = Client(controller, token, data_dir)
        d = client.call("Remove", pb.RemoveRequest(name=name)).deployment
        if wait and d.state != "removed":
            deadline = time.monotonic() + timeout
            while any(x.name == name for page in client.pages("ListDeployments", pb.ListDeploymentsRequest())
                      for x in page.deployments):
                if time.monotonic() > deadline:
                    fail(f"{name}: replicas not stopped after {timeout:.0f}s; see `fleet deployment describe {name}`",
                         EXIT_ERROR)
                time.sleep(0.5)
            d = pb.Deployment(name=name, state="removed")
        if output == Output.json:
            print_json(deployment_dict(d))
            return
        if d.state == "removed":
            console.print(f"removed {name}")
        else:
            console.print(f"removing {name}: {len(d.replicas)} replica(s) stopping; "
                          "reservations are freed as they stop")


def register_logs(app: typer.Typer) -> None:
    @app.command("logs")
    def logs(deployment: str,
             replica: Annotated[int, typer.Option(help="replica number (see `fleet deployment describe`)")] = -1,
             node: Annotated[str | None, typer.Option(
                 help="a replica spanning several nodes: the part on this node [default: the main]")] = None,
             follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
             lines: Annotated[int, typer.Option("--lines", "-n", help="how many last lines")] = 100,
             controller: ControllerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None) -> None:
        """Engine logs of a replica, streamed from its node through the controller."""
        import sys

        import grpc

        client = Client(controller, token, data_dir, timeout=None if follow else 60)  # type: ignore[arg-type]
        md = (("authorization", f"Bearer {client.token}"),)
        try:
            for chunk in client.fleet.Logs(pb.LogsRequest(deployment=deployment, replica=replica, lines=lines,
                                                          follow=follow, node=node or ""), metadata=md):
                sys.stdout.buffer.write(chunk.data)
                sys.stdout.flush()
        except KeyboardInterrupt:
            return
        except grpc.RpcError as e:
            fail(e.details() or str(e.code()), EXIT_USAGE)  # type: ignore[attr-defined]
