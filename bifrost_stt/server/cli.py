"""The ``bifrost-stt`` command: CLI → typed config → server, in that order.

``serve`` validates the whole configuration before uvicorn starts, so a bad file is one line on stderr and
exit status 2, never a traceback from inside a worker. Workers rebuild the same config from two environment
variables (``BIFROST_STT_CONFIG``, ``BIFROST_STT_OVERRIDES``) via ``bifrost_stt.gateway.config.load.config_from_environ``:
uvicorn imports the app factory by name in each worker process, so nothing else can carry it across.
"""

from __future__ import annotations

import argparse
import re
import importlib.util
import json
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from bifrost_stt.gateway.config.load import CONFIG_ENV, OVERRIDES_ENV, ConfigError, apply_overrides, load_config
from bifrost_stt.gateway.config.schema import LOG_FORMATS, LOG_LEVELS
from bifrost_stt.kernel.settings import GatewayConfig
from bifrost_stt.server import transcribe

EXIT_CONFIG = 2  # same status argparse uses for a usage error
APP_FACTORY = "bifrost_stt.server.app:app_factory"
# Extra seconds in-flight requests get on SIGTERM beyond the longest provider timeout, so a transcription
# that is still within its timeout completes instead of being cut.
SHUTDOWN_MARGIN_SECONDS = 5

log = logging.getLogger("bifrost_stt")

CONFIG_HELP = (
    "config file in upstream Bifrost's config.json shape, JSON or YAML (by extension, else by content). "
    "Without it, providers come from <KIND>_API_KEY / <KIND>_BASE_URL variables (Azure: AZURE_OPENAI_API_KEY "
    "and AZURE_OPENAI_ENDPOINT). Default: $BIFROST_STT_CONFIG if set."
)


def _version() -> str:
    try:
        return version("bifrost-stt")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bifrost-stt",
        description="Speech-to-text gateway serving Bifrost's transcription API in front of OpenAI, Azure, "
        "Groq and other providers. Configuration: docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="validate the configuration, then run the HTTP server",
        description="Validate the configuration, log ignored and unsupported settings once, then run uvicorn. "
        "Command-line values win over BIFROST_STT_HOST/PORT and the file's `server` section.",
    )
    serve.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default info)")
    serve.add_argument("--log-format", choices=LOG_FORMATS,
                       help="text (default) or json: one JSON object per log line, the per-request line included")
    serve.add_argument("--spec-dir", metavar="DIR", help="directory holding the OpenAPI document to serve "
                       "(default: the bundled one)")
    serve.set_defaults(handler=_serve)

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print a summary (never key values)",
        description="Load the configuration as `serve` would and print providers, key names, models and the "
        "settings that are ignored or unsupported. Exit status 0 when valid, 2 otherwise.",
    )
    check.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    check.set_defaults(handler=_check_config)

    caps = commands.add_parser(
        "capabilities",
        help="print the provider capability matrix (native formats, streaming, timestamps, diarization)",
        description="Print, as Markdown, what each registered provider does natively. Formats and streaming "
        "a provider lacks are still served: the gateway renders and streams them itself.",
    )
    caps.set_defaults(handler=_capabilities)

    sync = commands.add_parser(
        "spec-sync",
        help="update openapi/bifrost.yaml from a newer upstream Bifrost OpenAPI document, with a change report",
        description="Cut the served operations (gateway/contract/operations.py FROM_UPSTREAM) and the components "
        "they use out of an upstream Bifrost OpenAPI 3.1 document (JSON or YAML) and edit the project's document "
        "in place to match: only what changed is rewritten (comments, anchors, layout and our own prose kept; "
        "upstream's prose is never copied). Prints what changed: operations (and whether a handler exists), "
        "fields and parameters added, removed or retyped, enum values, required-ness, overlay targets that no "
        "longer match, and what the gateway does with each new field. Exits 1 when the overlay no longer applies.",
    )
    sync.add_argument("upstream", metavar="UPSTREAM", help="path of the upstream document")
    sync.add_argument("--out", metavar="PATH", help="where to write (default: openapi/bifrost.yaml of the checkout you are in; "
                      "outside a checkout --out is required)")
    sync.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 with the change report when upstream moved (the file would change)")
    sync.set_defaults(handler=_spec_sync)
    transcribe.add_parser(commands)  # bifrost_stt.server.transcribe
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except ConfigError as exc:
        print(f"bifrost-stt: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return status


def _config_path(args: argparse.Namespace) -> str | None:
    return args.config or os.environ.get(CONFIG_ENV) or None


def _serve(args: argparse.Namespace) -> int:
    path = _config_path(args)
    overrides: dict[str, Any] = {
        "host": args.host, "port": args.port, "workers": args.workers,
        "log_level": args.log_level, "spec_dir": args.spec_dir, "log_format": args.log_format,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    config = apply_overrides(load_config(path, os.environ), overrides)
    preflight(config)
    server = config.server
    configure_logging(server.log_level, server.log_format)
    _log_reports(config)
    _prepare_metrics(server.workers)
    if not config.providers:
        log.warning("no provider is configured: every transcription request will fail (configure one, or "
                    "install the local engine: pip install 'bifrost-stt[local]'; see docs/configuration.md)")
    elif len(config.providers) == 1 and getattr(only_options(config), "default_model", None):
        (pid,) = config.providers
        log.info("only the %s engine is configured: %s/<model> works on every route, and model names it does "
                 "not know (whisper-1, gpt-4o-transcribe, Azure deployments) are served by %s/%s; configure a "
                 "cloud provider to send bare names to openai again", pid, pid, pid,
                 getattr(only_options(config), "default_model"))
    os.environ[CONFIG_ENV] = os.path.abspath(path) if path else ""
    os.environ[OVERRIDES_ENV] = json.dumps(overrides)

    import uvicorn  # imported here so `check-config` and `--help` stay fast

    from bifrost_stt.server import connections

    # Header/body timeouts, a minimum upload rate and a connection cap (server.* settings): see
    # bifrost_stt.server.connections, on uvicorn's httptools protocol (uvicorn[standard] brings httptools).
    connections.configure(connections.Limits.of(server))
    descriptors = connections.raise_open_file_limit()
    log.info("accepting up to %d connections (open-file limit %d)", connections.current().cap(), descriptors)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        lifespan="on",  # a broken wiring must stop the start, not turn every request into a 500
        loop="uvloop" if importlib.util.find_spec("uvloop") else "auto",
        http=connections.GuardedHttpTools,
        log_level=server.log_level,
        # the JSON format owns every line: uvicorn's own handlers would print theirs as text
        log_config=None if server.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        # one request line per request is ours (bifrost_stt.access, with provider, model, audio seconds)
        access_log=server.log_format != "json",
        # X-Forwarded-* rewriting wraps every request in one more middleware and nothing here reads the
        # client address or scheme: off (uvicorn's default is on).
        proxy_headers=False,
        timeout_graceful_shutdown=_shutdown_timeout(config),
    )
    return 0


def configure_logging(level: str, log_format: str) -> None:
    """The root handler for every worker: ``text`` (uvicorn's look) or ``json`` (one object per line)."""
    numeric = level.upper() if level != "trace" else 5
    if log_format == "json":
        from bifrost_stt.gateway.observe.logline import JsonFormatter

        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(numeric)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers[:] = []
            logging.getLogger(name).propagate = True
        return
    logging.basicConfig(level=numeric, format="%(levelname)s:     %(message)s")


def _prepare_metrics(workers: int) -> None:
    """Several workers share their metrics through files (prometheus-client's multiprocess mode): the
    directory is made (or emptied) here, before any worker starts, so one scrape sees every worker."""
    from bifrost_stt.gateway.observe.metrics import MULTIPROC_ENV, prepare_multiprocess

    given = os.environ.get(MULTIPROC_ENV)
    if workers > 1 or given:
        os.environ[MULTIPROC_ENV] = prepare_multiprocess(given)
        log.info("metrics: %d workers share %s", workers, os.environ[MULTIPROC_ENV])
def only_options(config: GatewayConfig) -> object:
    """The settings of the one configured provider (a provider module's own, such as the local engine's)."""
    (provider,) = config.providers.values()
    return provider.options


def _shutdown_timeout(config: GatewayConfig) -> int:
    timeouts = [p.network.default_request_timeout_in_seconds for p in config.providers.values()]
    return int(max(timeouts, default=30.0)) + SHUTDOWN_MARGIN_SECONDS


def _log_reports(config: GatewayConfig) -> None:
    auth = config.auth
    if not auth.active:
        log.warning("no admin credential (governance.auth_config): /api/*, /metrics and inference are open to "
                    "anyone who can reach this address")
    elif auth.disable_auth_on_inference:
        log.info("admin auth on for /api/* and /metrics; inference routes are open (disable_auth_on_inference)")
    else:
        log.info("admin auth on for /api/*, /metrics and inference routes")
    store = config.logs_store
    if store.enabled:
        where = ((store.path or "the default logs.db") if store.type == "sqlite"
                 else f"postgres {store.host}:{store.port}/{store.db_name}")
        log.info("request logs: %s%s", where, "" if config.client.enable_logging else " (recording off: client.enable_logging)")
    if config.ignored_sections:
        log.info("ignored upstream settings (not used for transcription): %s", ", ".join(config.ignored_sections))
    if config.unsupported_fields:
        log.warning("unsupported settings (accepted, no effect here): %s", ", ".join(config.unsupported_fields))


def _check_config(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = load_config(path, os.environ)
    preflight(config)
    print("\n".join(summary(config, path)))
    return 0


def preflight(config: GatewayConfig) -> None:
    """What would otherwise fail inside a worker with a traceback, checked first as a ConfigError:
    the served contract (``server.spec_dir``) must load, and a configured job store must open."""
    from pathlib import Path
    import sqlite3

    from bifrost_stt.gateway.contract import loading as spec

    try:
        spec.to_connexion(spec.served_contract(config.server.spec_dir))
    except (OSError, spec.ContractError, ValueError) as exc:
        raise ConfigError("server.spec_dir", f"the OpenAPI document there cannot be served: {exc}") from None
    store = config.client.job_store_path
    if store:
        try:
            sqlite3.connect(store).close()
        except sqlite3.Error as exc:
            raise ConfigError("client.job_store_path", f"cannot open {store}: {exc}") from None


def _capabilities(_args: argparse.Namespace) -> int:
    from bifrost_stt.providers.matrix import render_matrix

    print(render_matrix())
    return 0


def _spec_sync(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from bifrost_stt.gateway.contract import loading as spec
    from bifrost_stt.gateway.contract.operations import READ_FIELDS
    from bifrost_stt.gateway.contract.sync import sync
    from bifrost_stt.gateway.contract.sync_edit import edit
    from bifrost_stt.gateway.contract.sync_report import change_report

    checkout = spec.checkout_openapi_dir()
    if args.out:
        out = Path(args.out)
    elif checkout is not None:
        out = checkout / spec.CONTRACT_FILE
    else:
        print("bifrost-stt: spec-sync: not inside a bifrost-stt checkout; say where to write with --out PATH "
              "(an installed package is never rewritten)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        upstream = yaml.safe_load(Path(args.upstream).read_text(encoding="utf-8"))
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        text = edit(current, sync(upstream))
        overlay = yaml.safe_load((out.parent / "overlay.yaml").read_text(encoding="utf-8")) \
            if (out.parent / "overlay.yaml").exists() else \
            yaml.safe_load((spec.OPENAPI_DIR / "overlay.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, spec.ContractError) as exc:
        print(f"bifrost-stt: spec-sync: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    document = yaml.safe_load(text)
    report = change_report(yaml.safe_load(current) or {}, document, handled=_handled_operations(),
                           read_fields=READ_FIELDS, overlay=overlay)
    broken = None
    try:
        spec.to_connexion(spec.apply_overlay(document, overlay))  # the merged contract must still build
    except spec.ContractError as exc:
        broken = f"overlay: the merged contract does not build: {exc}"
        report.append(broken)
    changed = text != current
    if args.check:
        if not changed and broken is None:
            print(f"{out} is in sync with {args.upstream}")
            return 0
        print(f"{out} differs from what {args.upstream} gives; run without --check to update it:")
        print("\n".join(f"  {line}" for line in report) or "  (layout only)")
        return 1
    if changed:
        out.write_text(text, encoding="utf-8")
        print(f"updated {out}; review with git diff. What changed:")
        print("\n".join(f"  {line}" for line in report) or "  (layout only)")
    else:
        print(f"{out} is already in sync with {args.upstream}")
    return 1 if broken else 0


def _handled_operations() -> set[str] | None:
    """operationIds the handlers serve (None when the table cannot be built here)."""
    try:
        from bifrost_stt import handlers
        from bifrost_stt.gateway.compose import Gateway

        return set(handlers.operations(Gateway(GatewayConfig())))
    except Exception:  # the report then says "handler unknown"
        return None


_SECRETISH = re.compile(r"secret|password|token|key", re.IGNORECASE)


def summary(config: GatewayConfig, path: str | None) -> list[str]:
    """Human-readable lines describing ``config``; key values never appear, only key names."""
    lines = [f"configuration: {path or 'environment variables (no file)'}: valid"]
    if not config.providers:
        lines.append("providers: none configured")
    for pid, provider in config.providers.items():
        kind = "" if provider.kind == pid else f" (custom, kind {provider.kind})"
        if provider.options is not None:  # a provider with settings of its own (the local engine): no network
            limits = provider.concurrency
            lines.append(f"provider {pid}{kind}: {provider.options}, concurrency {limits.concurrency}, "
                         f"buffer_size {limits.buffer_size}")
            continue
        lines.append(f"provider {pid}{kind}: base_url {provider.network.base_url or 'default'}"
                     + (", key-less" if provider.is_key_less else ""))
        for key in provider.keys:
            models = ", ".join(key.models) if key.models else "none"
            extra = "" if key.enabled else ", disabled"
            if key.aliases:
                extra += ", aliases " + ", ".join(f"{m} -> {d}" for m, d in key.aliases.items())
            for section_name, values in key.sections.items():  # a vendor's key section: endpoints, versions
                shown = [f"{k} {v}" for k, v in values.items() if not _SECRETISH.search(k)]
                extra += f", {section_name}: " + ", ".join(shown) if shown else ""
            lines.append(f"  key {key.name}: weight {key.weight:g}, models {models}{extra}")
    server = config.server
    lines.append(f"server: {server.host}:{server.port}, workers {server.workers}, log level {server.log_level}")
    lines.append(f"client: max body {config.client.max_request_body_size_mb} MB")
    store = config.logs_store
    if store.enabled:
        target = (f"sqlite {store.path or '(default logs.db)'}" if store.type == "sqlite"
                  else f"postgres {store.user + '@' if store.user else ''}{store.host}:{store.port}/{store.db_name}")
        lines.append(f"logs_store: {target}, retention {store.retention_days or config.client.log_retention_days} days"
                     + (", content logging off" if config.client.disable_content_logging else ""))
    else:
        lines.append("logs_store: off")
    auth = config.auth
    lines.append(f"admin auth: on, user {auth.admin_username}" + (", inference open" if auth.disable_auth_on_inference else "")
                 if auth.active else "admin auth: off (everything open)")
    lines.append(_governance_line(config))
    lines.append(_cache_line(config))
    if config.ignored_sections:
        lines.append("ignored (not used for transcription): " + ", ".join(config.ignored_sections))
    if config.unsupported_fields:
        lines.append("unsupported (accepted, no effect here): " + ", ".join(config.unsupported_fields))
    return lines


def _governance_line(config: GatewayConfig) -> str:
    """One line on virtual keys and where their state lives (never a key's value)."""
    gov = config.governance
    if not gov.enabled:
        return "governance: off (no governance section, config_store or enforce_auth_on_inference)"
    store = gov.config_store.type if gov.config_store is not None else "sqlite (default file)"
    counters = f"redis {gov.store.addr}" if gov.store is not None else "the config store's sqlite file"
    return (f"governance: {len(gov.virtual_keys)} virtual keys, {len(gov.budgets)} budgets, "
            f"{len(gov.rate_limits)} rate limits{', enforced' if gov.enforce else ''}; config_store {store}; "
            f"counters in {counters}")


def _cache_line(config: GatewayConfig) -> str:
    cache = config.cache
    if not cache.enabled:
        return "cache: off"
    where = (f"redis {cache.redis.addr} db {cache.redis.db}, namespace {cache.namespace}" if cache.redis
             else f"embedded {cache.store_path or 'per-user temp dir'}, at most {cache.max_size_mb} MB")
    engaged = f"default key {cache.default_cache_key!r}" if cache.default_cache_key else "x-bf-cache-key"
    return f"cache: {where}; ttl {cache.ttl_seconds:g} s; engaged by {engaged}"


if __name__ == "__main__":
    raise SystemExit(main())

