"""`fleet models`, `fleet models show NAME`, `fleet models add`, `fleet estimate`: the catalog and the
memory estimator, run locally (no controller needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.cli.options import ControllerOpt, DataDirOpt, TokenOpt
from fleet.cli.output import Output, OutputOpt, Table, console, fail, gib, print_json
from fleet.common.gpus import GpuType, gpu_type
from fleet.controller.core.catalog import ENGINES, Catalog, Model, Quants, Variant
from fleet.controller.core.catalog_import import model_from_gguf, model_from_hf_config
from fleet.controller.core.errors import FleetError
from fleet.controller.core.estimate import (
    GIB,
    Estimate,
    estimate,
    fits,
    gguf_plan_for,
    incompatibility,
    min_gpus,
    min_nodes,
)
from fleet.controller.core.estimate_explain import explain
from fleet.controller.core.options import choose, options_for
from fleet.controller.store.files import catalog_with, default_catalog_dir, read_gguf_header, write_model
from fleet.controller.store.gguf_headers import find_header, record_size

# No GPU kind given: a capable GPU (every quant runs) to list the variants from; only quality decides then.
_ALL_CAPABLE = (GpuType("any GPU", 1 << 50, "9.0", "nvidia"),)

CatalogDirOpt = Annotated[Path | None, typer.Option(
    "--catalog-dir", help="where user-added models live (default $FLEET_CATALOG_DIR or ~/.local/share/fleet/catalog)")]


def _catalog(catalog_dir: Path | None) -> Catalog:
    return catalog_with([catalog_dir or default_catalog_dir()])


def variant_dict(v: Variant) -> dict[str, Any]:
    return {
        "quant": v.quant, "engine": v.engine, "source": v.source, "file": v.file or None,
        "min_compute_capability": v.min_compute_capability or None, "bits_per_weight": v.bits_per_weight,
        "size_bytes": v.size_bytes, "group_size": v.group_size, "quality": v.quality,
    }


def model_dict(m: Model) -> dict[str, Any]:
    a = m.arch
    return {
        "name": m.name, "family": m.family, "hf_id": m.hf_id, "aliases": list(m.aliases), "license": m.license,
        "params_total": m.params_total, "params_active": m.params_active,
        "architecture": {
            "layers": a.layers, "hidden": a.hidden, "heads": a.heads, "kv_heads": a.kv_heads,
            "head_dim": a.head_dim, "vocab": a.vocab, "intermediate_size": a.intermediate_size,
            "max_context": a.max_context, "experts": a.experts, "experts_active": a.experts_active,
            "attention": a.attention, "sliding_window": a.sliding_window or None,
            "sliding_layers": a.sliding_layers or None, "tied_embeddings": a.tied_embeddings,
        },
        "variants": [variant_dict(v) for v in m.variants],
        "origin": m.origin,
    }


def estimate_dict(e: Estimate) -> dict[str, Any]:
    out = {
        "model": e.model, "quant": e.quant, "engine": e.engine, "context": e.context, "tp": e.tp,
        "device": e.device, "nodes": e.nodes,
        "per_gpu": {"weights": e.weights, "kv_cache": e.kv_cache, "activations": e.activations,
                    "runtime": e.runtime, "total": e.total},
        "notes": list(e.notes),
    }
    if e.stage_totals:
        out["stage_totals"] = list(e.stage_totals)  # vLLM over several nodes: per-GPU total of every stage
    return out


def _params(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def _list(catalog: Catalog, family: str | None, license: str | None, output: Output) -> None:
    models = catalog.models()
    if family:
        models = [m for m in models if m.family.lower().startswith(family.lower())]
    if license:
        models = [m for m in models if license.lower() in m.license.lower()]
    if (family or license) and not models:
        fams = ", ".join(sorted({m.family for m in catalog.models()}))
        lics = ", ".join(sorted({m.license for m in catalog.models()}))
        fail(f"no model matches; families: {fams}; licenses: {lics}")
    if output == Output.json:
        print_json([model_dict(m) for m in models])
        return
    t = Table("NAME", "FAMILY", "PARAMS", "CONTEXT", "LICENSE", "VARIANTS", "HF ID")
    for m in models:
        quants = " ".join(dict.fromkeys(v.quant for v in m.variants))
        active = f" ({_params(m.params_active)} active)" if m.params_active != m.params_total else ""
        t.add_row(m.name, m.family, _params(m.params_total) + active, str(m.arch.max_context), m.license,
                  quants, m.hf_id)
    console.print(t)


def _show(m: Model, output: Output) -> None:
    if output == Output.json:
        print_json(model_dict(m))
        return
    a = m.arch
    console.print(f"[bold]{m.name}[/] ({m.family}) {m.hf_id}  license {m.license}")
    if m.aliases:
        console.print(f"aliases: {', '.join(m.aliases)}")
    moe = f", MoE {a.experts} experts / {a.experts_active} active" if a.experts else ""
    window = f" (window {a.sliding_window} on {a.sliding_layers} layers)" if a.sliding_window else ""
    console.print(f"params {_params(m.params_total)} ({_params(m.params_active)} active); {a.layers} layers, "
                  f"hidden {a.hidden}, heads {a.heads}/{a.kv_heads} kv, head_dim {a.head_dim}, vocab {a.vocab}, "
                  f"max context {a.max_context}{moe}; attention {a.attention}{window}")
    t = Table("QUANT", "ENGINE", "MIN CC", "BITS/W", "SIZE GiB", "QUALITY", "SOURCE")
    for v in sorted(m.variants, key=lambda v: -v.quality):
        size = gib(v.size_bytes) if v.size_bytes else "-"
        src = f"{v.source} {v.file}".strip()
        t.add_row(v.quant, v.engine, v.min_compute_capability or "-", f"{v.bits_per_weight:g}", size,
                  str(v.quality), src)
    console.print(t)


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="The model catalog: families, architectures, quantized variants.",
                             no_args_is_help=False)

    @models_app.callback(invoke_without_command=True)
    def models(
        ctx: typer.Context,
        family: Annotated[str | None, typer.Option("--family", help="only this family (llama3.1, qwen2.5, …)")] = None,
        license: Annotated[str | None, typer.Option("--license", help="only licenses containing this (MIT, Apache)")]
        = None,
        catalog_dir: CatalogDirOpt = None,
        output: OutputOpt = Output.table,
    ) -> None:
        """List the catalog's models (shipped and user-added)."""
        if ctx.invoked_subcommand is not None:
            return
        _list(_guard(lambda: _catalog(catalog_dir)), family, license, output)

    @models_app.command("show")
    def show(
        name: Annotated[str, typer.Argument(help="model name, alias or HF repo id")],
        catalog_dir: CatalogDirOpt = None,
        output: OutputOpt = Output.table,
    ) -> None:
        """A model's architecture and variants."""
        _show(_guard(lambda: _catalog(catalog_dir).get(name)), output)

    @models_app.command("add")
    def add(
        from_config: Annotated[Path | None, typer.Option("--from-config", help="a Hugging Face config.json")] = None,
        from_gguf: Annotated[Path | None, typer.Option("--from-gguf", help="a GGUF file")] = None,
        name: Annotated[str | None, typer.Option("--name", help="catalog name (default: from the file)")] = None,
        hf_id: Annotated[str, typer.Option("--hf-id", help="HF repo the weights come from (--from-config)")] = "",
        license: Annotated[str | None, typer.Option("--license", help="license of the weights")] = None,
        catalog_dir: CatalogDirOpt = None,
        output: OutputOpt = Output.table,
    ) -> None:
        """Import a custom model (a fine-tune) from its config.json or GGUF header."""
        if (from_config is None) == (from_gguf is None):
            fail("give exactly one of --from-config config.json or --from-gguf file.gguf")
        quants = _guard(lambda: _catalog(catalog_dir)).quants
        model = _guard(lambda: _import(from_config, from_gguf, name, hf_id, license, quants))
        directory = catalog_dir or default_catalog_dir()
        path = write_model(model, directory, _catalog(catalog_dir).quants)
        if output == Output.json:
            print_json({**model_dict(model), "path": str(path)})
        else:
            v = model.variants[0]
            console.print(f"added [bold]{model.name}[/] ({_params(model.params_total)} params, {v.quant} on "
                          f"{v.engine}) to {path}")

    app.add_typer(models_app, name="models")

    @app.command("estimate")
    def estimate_cmd(
        model: Annotated[str, typer.Argument(help="model name, alias or HF repo id")],
        quant: Annotated[str | None, typer.Option(
            "--quant", "-q", help="bf16, fp8, awq, gptq, q4_k_m, … (see models show) [default: the one a quantized "
                                  "repo id implies, else as `fleet place` picks: the best quality that fits --gpu]")]
        = None,
        engine: Annotated[str | None, typer.Option("--engine", help="vllm or llama.cpp (default: the quant's)")] = None,
        context: Annotated[int | None, typer.Option("--context", "-c", help="context length in tokens")] = None,
        tp: Annotated[int | None, typer.Option("--tp", help="GPUs per replica (tensor parallel size); per node "
                                                            "with --nodes")] = None,
        nodes: Annotated[int, typer.Option("--nodes", min=1, max=16, help="nodes one replica spans (vLLM: PP = "
                                                                          "nodes; llama.cpp: rpc-server parts)")] = 1,
        gpu: Annotated[str | None, typer.Option("--gpu", help="GPU type, e.g. A100-80GB, L4, RTX4090")] = None,
        gpu_memory: Annotated[float | None, typer.Option("--gpu-memory", help="GPU memory in GiB")] = None,
        kv_cache_dtype: Annotated[str, typer.Option("--kv-cache-dtype", help="auto, fp8 (vLLM), q8_0 (llama.cpp)")]
        = "auto",
        device: Annotated[str, typer.Option("--device", help="gpu, or cpu (llama.cpp in RAM)")] = "gpu",
        catalog_dir: CatalogDirOpt = None,
        models_dir: Annotated[Path | None, typer.Option(
            "--models-dir", envvar="FLEET_MODELS_DIR", help="where GGUF files may be (exact sizes from their headers)")]
        = None,
        offline: Annotated[bool, typer.Option(
            "--offline", help="no network: neither the hub (GGUF headers) nor a controller (observed memory)")] = False,
        explain: Annotated[bool, typer.Option("--explain", help="each term with its formula and inputs")] = False,
        controller: ControllerOpt = None, token: TokenOpt = None, data_dir: DataDirOpt = None,
        output: OutputOpt = Output.table,
    ) -> None:
        """Per-GPU memory a replica needs: weights, KV cache, activations, runtime.

        A GGUF's weights are exact when its header is reachable (--models-dir, the Hugging Face cache, or a
        ranged read of the header from the hub); what was read is recorded in the catalog dir for next time.
        With a controller configured (--controller, FLEET_CONTROLLER or an admin token), also shows what
        replicas of the same key really used.
        """
        where = Where(models_dir, offline, controller, token, data_dir, explain)
        _guard(lambda: _estimate(model, quant, engine, context, tp, gpu, gpu_memory, kv_cache_dtype, device,
                                 catalog_dir, output, where, nodes))


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except FleetError as e:
        fail(e.message)


def _import(from_config: Path | None, from_gguf: Path | None, name: str | None, hf_id: str,
            license: str | None, quants: Quants) -> Model:
    if from_gguf is not None:
        if not from_gguf.is_file():
            fail(f"{from_gguf}: no such GGUF file")
        return model_from_gguf(read_gguf_header(from_gguf), name=name, license=license, quants=quants)
    assert from_config is not None
    try:
        cfg = json.loads(from_config.read_text())
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{from_config}: cannot read a JSON config ({e})")
    return model_from_hf_config(cfg, name=name or (from_config.parent.name if from_config.parent.name else None),
                                hf_id=hf_id, license=license or "unknown", quants=quants)


def _chosen_variant(catalog: Catalog, m: Model, engine: str | None, context: int | None, tp: int | None,
                    kind: GpuType | None, device: str, nodes: int = 1) -> tuple[Variant, int | None, str]:
    """No --quant: the variant (and TP) `fleet place` would pick on this GPU kind (over `nodes` nodes), and why."""
    try:
        options = options_for(m.name, None, engine, context, (kind,) if kind else _ALL_CAPABLE, tp, device=device,
                              catalog=catalog, nodes=nodes)
    except FleetError as e:
        if kind is None or device == "cpu":
            raise
        where = "in one node" if nodes == 1 else f"over {nodes} nodes"
        fail(f"{m.name}: no variant fits {kind.name} GPUs at TP {tp or '1-8'} {where} ({e.message}); "
             "pass --quant to see one variant's estimate")
    best, why = choose(options, kind if device == "gpu" else None)
    return catalog.variant(m, best.quant, best.engine), (tp or best.tp or None), why


@dataclass(frozen=True)
class Where:
    """Where `fleet estimate` may look beyond the catalog: GGUF files, the hub, a controller."""

    models_dir: Path | None = None
    offline: bool = False
    controller: str | None = None
    token: str | None = None
    data_dir: Path | None = None
    explain: bool = False


def _exact_gguf(catalog: Catalog, m: Model, v: Variant, catalog_dir: Path | None, where: Where
                ) -> tuple[Catalog, str | None]:
    """Read the variant's GGUF header if it is reachable and record its size; (catalog, where it was read)."""
    if v.engine != "llama.cpp" or v.size_bytes:
        return catalog, None
    dirs = [d for d in (where.models_dir,) if d is not None]
    found = find_header(v, dirs, hub=not where.offline)
    if found is None:
        return catalog, None
    record_size(catalog_dir or default_catalog_dir(), m, v, found)
    return _catalog(catalog_dir), found.where


def _observed(where: Where, m: Model, v: Variant, context: int, tp: int, gpu: str | None, device: str
              ) -> dict[str, Any] | str | None:
    """What replicas of this key really used, from the controller when one is configured; a string says why
    not (unreachable), None means no controller is configured."""
    import os

    from fleet.cli.client import Client, resolve_token
    from fleet.proto import fleet_pb2 as pb

    configured = where.controller or os.environ.get("FLEET_CONTROLLER") or resolve_token(where.token, where.data_dir)
    if where.offline or not configured:
        return None
    try:
        client = Client(where.controller, where.token, where.data_dir, timeout=5.0)
        md = (("authorization", f"Bearer {client.token}"),) if client.token else ()
        resp = client.fleet.Observed(pb.ObservedRequest(
            model=m.name, quant=v.quant, engine=v.engine, context=context, tp=tp if device == "gpu" else 1,
            gpu_type="cpu" if device == "cpu" else (gpu or "")), metadata=md, timeout=5.0)
    except (typer.Exit, SystemExit):
        return "no controller CA here"
    except Exception as e:  # unreachable, refused, older controller: the estimate stands on its own
        code = getattr(e, "code", None)
        return f"controller not reachable ({code().name if callable(code) else type(e).__name__})"
    if not resp.replicas:
        return {"replicas": 0}
    mem = resp.memory
    return {"replicas": resp.replicas, "weights": mem.weights, "kv_cache": mem.kv_cache,
            "activations": mem.activations, "runtime": mem.runtime, "total": mem.total,
            "engine_versions": list(resp.engine_versions), "gpu_types": list(resp.gpu_types)}


def _estimate(name: str, quant: str | None, engine: str | None, context: int | None, tp: int | None, gpu: str | None,
              gpu_memory: float | None, kv_cache_dtype: str, device: str, catalog_dir: Path | None,
              output: Output, where: Where = Where(offline=True), nodes: int = 1) -> None:
    if engine is not None and engine not in ENGINES:
        fail(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    if gpu and gpu_memory:
        fail("give --gpu NAME or --gpu-memory GIB, not both")
    catalog = _catalog(catalog_dir)
    resolved = catalog.resolve(name)
    m = resolved.model
    quant = quant or resolved.quant
    engine = engine or resolved.engine
    memory, cc, gpu_name = None, None, None
    kind: GpuType | None = None
    if gpu:
        try:
            kind = gpu_type(gpu)
        except KeyError as e:
            fail(str(e.args[0]))
    elif gpu_memory is not None and gpu_memory > 0:
        # a GPU of that size that runs every quant: only memory is known
        kind = GpuType(f"{gpu_memory:g} GiB GPU", int(gpu_memory * GIB), "9.0", "nvidia")
    chosen = ""
    if quant is None:
        v, tp, chosen = _chosen_variant(catalog, m, engine, context, tp, kind, device, nodes)
        quant, engine = v.quant, v.engine
    v = catalog.variant(m, quant, engine)
    catalog, header_from = _exact_gguf(catalog, m, v, catalog_dir, where)
    m = catalog.get(m.name)
    v = catalog.variant(m, quant, engine)
    if gpu:
        assert kind is not None
        g = kind
        memory, cc, gpu_name = g.memory_bytes, g.compute_capability, g.name
        problem = incompatibility(v, cc)
        if problem:
            fine = sorted({x.quant for x in m.variants if incompatibility(x, cc) is None})
            fail(f"{problem}; on a {g.name} {m.name} can run: {', '.join(fine) or 'nothing'}")
    elif gpu_memory is not None:
        if gpu_memory <= 0:
            fail("--gpu-memory must be positive (GiB)")
        memory = int(gpu_memory * GIB)
    e = estimate(m, v, engines=catalog.engines, context=context, tp=tp or 1, gpu_memory_bytes=memory,
                 kv_cache_dtype=kv_cache_dtype, device=device, nodes=nodes)
    result = estimate_dict(e)
    if chosen:
        result["chosen"] = chosen
    result["weights_from"] = _weights_from(catalog, m, v, header_from)
    if where.explain:
        result["explain"] = [{"term": t.name, "bytes": t.bytes, "formula": t.formula, "inputs": t.inputs}
                             for t in explain(m, v, e, engines=catalog.engines, kv_cache_dtype=kv_cache_dtype,
                                              gpu_memory_bytes=memory)]
    seen = _observed(where, m, v, e.context, e.tp, gpu_name, device)
    result["observed"] = seen if isinstance(seen, dict) else None
    if isinstance(seen, str):
        result["observed_error"] = seen
    if memory is not None and device == "gpu":
        result["gpu"] = gpu_name
        result["gpu_memory"] = memory
        result["fits"] = fits(e, memory)
        if tp is None and nodes == 1:
            result["min_gpus"] = min_gpus(m, v, engines=catalog.engines, context=e.context, gpu_memory_bytes=memory,
                                          kv_cache_dtype=kv_cache_dtype)
        if tp is None and not result.get("min_gpus"):
            # Fits no single 8-GPU node (or the asked node count): the fewest nodes, and the TP on each.
            least = min_nodes(m, v, engines=catalog.engines, context=e.context, gpu_memory_bytes=memory,
                              kv_cache_dtype=kv_cache_dtype)
            result["min_nodes"] = {"nodes": least[0], "tp": least[1]} if least else None
        if v.engine == "vllm":
            result["gpu_memory_utilization"] = e.gpu_memory_utilization
    if output == Output.json:
        print_json(result)
        return
    _render(e, result)


def _weights_from(catalog: Catalog, m: Model, v: Variant, header_from: str | None) -> str:
    if header_from:
        return f"GGUF header ({header_from}), recorded in the catalog dir"
    if v.size_bytes:
        return "the artifact's exact size (catalog)"
    if gguf_plan_for(m, v, catalog.engines) is not None:
        return f"llama.cpp's {v.ftype} rules, tensor by tensor (no GGUF header reachable)"
    return "bits per weight"


def _render(e: Estimate, result: dict[str, Any]) -> None:
    if result.get("chosen"):
        console.print(f"[dim]no --quant: {result['chosen']}[/]", highlight=False)
    where = "per GPU" if e.device == "gpu" else "in RAM"
    if e.nodes > 1:
        shape = f"TP {e.tp} × PP {e.nodes}" if e.engine == "vllm" else f"TP {e.tp} on each of {e.nodes} nodes"
        where += " of the largest stage" if e.stage_totals else " on each node"
    else:
        shape = f"TP {e.tp}"
    console.print(f"[bold]{e.model}[/] {e.quant} on {e.engine}, context {e.context}, {shape} ({where}, GiB)")
    t = Table("WEIGHTS", "KV CACHE", "ACTIVATIONS", "RUNTIME", "TOTAL")
    t.add_row(gib(e.weights), gib(e.kv_cache), gib(e.activations), gib(e.runtime), f"[bold]{gib(e.total)}[/]")
    console.print(t)
    console.print(f"[dim]weights from {result['weights_from']}[/]")
    if result.get("explain"):
        t = Table("TERM", "GiB", "FORMULA", "INPUTS", show_lines=True)
        for term in result["explain"]:
            inputs = ", ".join(f"{k}={v}" for k, v in term["inputs"].items())
            t.add_row(term["term"], gib(term["bytes"]), term["formula"], inputs)
        console.print(t)
    seen = result.get("observed")
    if seen and seen.get("replicas"):
        versions = f" ({e.engine} {', '.join(seen['engine_versions'])})" if seen.get("engine_versions") else ""
        console.print(f"observed on {seen['replicas']} replica(s){versions}: weights {gib(seen['weights'])} GiB, "
                      f"KV cache {gib(seen['kv_cache'])} GiB, total {gib(seen['total'])} GiB")
    elif seen is not None:
        console.print("[dim]observed: no replica of this key has reported yet[/]")
    elif result.get("observed_error"):
        console.print(f"[dim]observed: {result['observed_error']}[/]")
    if "fits" in result:
        label = result["gpu"] or f"{gib(result['gpu_memory'])} GiB GPU"
        verdict = "[green]fits[/]" if result["fits"] else "[red]does not fit[/]"
        console.print(f"{label}: {verdict}")
        if "min_gpus" in result:
            n = result["min_gpus"]
            console.print(f"smallest TP that fits: {n}" if n else "no valid TP up to 8 fits on one node")
        if "min_nodes" in result:
            least = result["min_nodes"]
            if least and least["nodes"] > 1:
                console.print(f"needs {least['nodes']} nodes: TP {least['tp']} on each "
                              f"(`fleet estimate ... --nodes {least['nodes']}`, `fleet place ... --nodes "
                              f"{least['nodes']}`)")
            elif not least:
                console.print("does not fit even across 16 nodes of 8 GPUs")
        if result["fits"] and result.get("gpu_memory_utilization"):
            console.print(f"launch vLLM with --gpu-memory-utilization {result['gpu_memory_utilization']:.2f}")
    for n in e.notes:
        console.print(f"[dim]- {n}[/]")
