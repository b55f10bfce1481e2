"""What ``make dev`` prints once ready: what runs where (one status line), the demo data
and tokens, and one example per route (a curl, or a scripts/invoke line)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from devkit.runner.services import Services, redact_url
from devkit.runner.settings import DEFAULT_PORT, LOCAL_JWT_SECRET, relative

if TYPE_CHECKING:
    from devkit.runner.app import Runner


def status_line(services: Services, runner: Runner) -> str:
    ai = "OpenAI (OPENAI_API_KEY set)" if os.environ.get("OPENAI_API_KEY") else \
        "offline providers (OPENAI_API_KEY not set)"
    urls = sum(1 for f in runner.functions.values() if f.url is not None)
    scheduled = sum(1 for f in runner.functions.values() if f.schedule_list)
    envs = [runner.function_env(fn) for fn in runner.functions.values()]
    payments = []
    for label, fake, setting in (("Paymob", services.paymob, "PAYMOB_API_URL"),
                                 ("Stripe", services.stripe, "STRIPE_API_BASE"),
                                 ("RevenueCat", services.revenuecat, "REVENUECAT_API_URL")):
        if fake is not None and any(env.get(setting) == fake.base_url for env in envs):
            payments.append(f"{label} fake at {fake.base_url}")
        else:
            payments.append(f"{label} as configured")
    moto = services.moto
    kept = f"data in {relative(moto.state_dir)}" if moto and moto.state_dir else "in memory"
    if moto and moto.state_dir and moto.restored:
        kept += f", {moto.restored} object(s) restored"
    notes = [n for n in (services.s3_note, *(moto.notes if moto else [])) if n]
    return (f"postgres {redact_url(services.database_url)} ({services.database_source}) | "
            f"s3 moto at {services.s3_endpoint} ({', '.join(services.buckets)}; {kept}"
            f"{''.join('; ' + n for n in notes)}) | ai {ai} | "
            f"payments {', '.join(payments)} | "
            f"functions {urls} URL(s) at {runner.base_url}/<function>/, {scheduled} scheduled")


#: The sample shown for a route that has several (else the first by name); the others
#: run with scripts/invoke.
HEADLINE_SAMPLES = ("transaction-paid", "initial-purchase", "checkout-session-completed")
_ID_SEGMENT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|\d+")


def sample_route(event: Any) -> tuple[str, str] | None:
    """(method, path with ids as ``{id}``) of a Function URL sample event, else None."""
    if not isinstance(event, dict) or "rawPath" not in event:
        return None
    method = str(((event.get("requestContext") or {}).get("http") or {}).get("method") or "GET").upper()
    path = "/".join("{id}" if _ID_SEGMENT.fullmatch(part) else part for part in event["rawPath"].split("/"))
    return method, path or "/"


def _samples(folder: Path) -> list[tuple[Path, Any]]:
    samples = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stem) if folder.is_dir() else []:
        try:
            samples.append((path, json.loads(path.read_text())))
        except ValueError:
            continue
    return samples


def curl_examples(runner: Runner, events_dir: Path | None = None) -> list[str]:
    """One example per route of each URL function, from its sample events in
    events/<function>/*.json (a curl, or for a sample whose signature expires a re-sign
    piped to scripts/invoke), one curl to the base URL of a URL function without samples,
    a scripts/invoke line per sample of a function without a URL, and one curl per
    scheduled function (run it now)."""
    events_dir = events_dir or runner.template_path.parent / "events"
    port = f" --port {runner.port}" if runner.port != DEFAULT_PORT else ""
    lines: list[str] = []
    for name, fn in sorted(runner.functions.items()):
        samples = _samples(events_dir / name)
        if fn.url is None:
            lines += [f"scripts/invoke {name} --event {relative(path)}{port}" for path, _ in samples]
        elif not samples:
            lines.append(f'curl -s {runner.base_url}/{name}/ -H "Authorization: Bearer $TOKEN"')
        routes: dict[tuple[str, str], list[tuple[Path, Any]]] = {}
        for path, event in samples if fn.url is not None else []:
            route = sample_route(event)
            if route is not None:
                routes.setdefault(route, []).append((path, event))
        for (method, route), found in routes.items():
            path, event = next((s for s in found if s[0].stem in HEADLINE_SAMPLES), found[0])
            more = f" (+{len(found) - 1} more: {relative(path.parent)}/)" if len(found) > 1 else ""
            lines.append(f"# {name} {method} {route}: {relative(path)}{more}")
            if any(k.lower() == "stripe-signature" for k in event.get("headers") or {}):
                # the signature's timestamp must be recent: sign it now, then invoke
                signed = f"scripts/sign-webhook {relative(path)}"
                lines.append(f"{signed} | scripts/invoke {name} --event -{port}")
            elif _token_variable(event) is None:
                # a sample of another demo user (the account samples): its own token, as committed
                lines.append(f"scripts/invoke {name} --event {relative(path)}{port}")
            else:
                lines.append(sample_curl(runner.base_url, name, event)
                             or f"scripts/invoke {name} --event {relative(path)}{port}")
        if fn.schedule_list:
            lines.append(f"curl -s -X POST {runner.base_url}/_schedules/{name}")
    return lines


_CURL_SKIP = {"host", "content-length", "user-agent", "connection", "accept-encoding"}


def _token_variable(event: dict[str, Any]) -> str | None:
    """The banner's variable holding the token of the sample's user ($TOKEN for the demo
    user, $PARTNER_TOKEN for the partner, "" for a sample without a token), else None."""
    from devkit import samples, seed

    subject = samples.token_subject(event)
    if subject is None:
        return ""
    return {str(seed.DEMO_USER_ID): "$TOKEN", str(seed.PARTNER_USER_ID): "$PARTNER_TOKEN"}.get(subject)


def sample_curl(base_url: str, name: str, event: dict[str, Any]) -> str | None:
    """The curl command that makes the runner produce (nearly) this Function URL event."""
    if not isinstance(event, dict) or "rawPath" not in event:
        return None
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(http.get("method") or "GET").upper()
    query = event.get("rawQueryString") or ""
    url = f"{base_url}/{name}{event['rawPath']}" + (f"?{query}" if query else "")
    parts = ["curl -s"] + ([f"-X {method}"] if method != "GET" else []) + [shlex.quote(url)]
    for key, value in (event.get("headers") or {}).items():
        key = key.lower()
        if key in _CURL_SKIP or key.startswith(("x-forwarded-", "x-amzn-")):
            continue
        if key == "authorization" and str(value).lower().startswith("bearer "):
            parts.append(f'-H "authorization: Bearer {_token_variable(event) or "$TOKEN"}"')
        else:
            parts.append("-H " + shlex.quote(f"{key}: {value}"))
    if event.get("cookies"):
        parts.append("-b " + shlex.quote("; ".join(event["cookies"])))
    body = event.get("body")
    if body:
        if event.get("isBase64Encoded"):
            parts.append(f"--data-binary @<(echo {shlex.quote(body)} | base64 -d)")
        else:
            parts.append("--data-binary " + shlex.quote(body))
    return " ".join(parts)


def print_banner(out: TextIO, runner: Runner, svc: Services | None, elapsed: float) -> None:
    lines = [f"local runner ready in {elapsed:.1f} s: {runner.template_path}"]
    if svc is not None:
        from devkit import seed

        lines.append("status: " + status_line(svc, runner))
        if svc.applied:
            lines.append(f"migrations applied: {', '.join(svc.applied)}")
        demo = svc.seeded
        env = runner.jwt_settings()

        def token(user_id: Any) -> str:
            return seed.token(user_id, env.get("JWT_SECRET") or LOCAL_JWT_SECRET,
                              issuer=env.get("JWT_ISSUER") or None, audience=env.get("JWT_AUDIENCE") or None)

        lines += [f"demo user {demo.demo_user_id} ({demo.demo_credits} credits), partner "
                  f"{demo.partner_user_id}, pair {demo.pair_id}",
                  "tokens for the demo user and the partner (valid 7 days):",
                  f"export TOKEN={token(demo.demo_user_id)}",
                  f"export PARTNER_TOKEN={token(demo.partner_user_id)}"]
    else:
        lines.append(f"functions at {runner.base_url}/<function>/ (no local services)")
    if svc is not None and (svc.paymob or svc.stripe):
        lines.append("checkout pages: open the checkout_url of POST /checkout/paymob or the url of "
                     "POST /checkout/stripe to pay, decline or pay a wrong amount; each button sends the "
                     "provider's signed webhook to this runner")
    examples = curl_examples(runner)
    if examples:
        lines += ["examples:", *(f"  {line}" for line in examples)]
    lines.append("Ctrl-C stops the runner.")
    print("\n".join(lines), file=out, flush=True)
