"""The hub's workplace: ``hubstream serve hub``.

Pages rendered on the server (they work without JavaScript), styled with GOV.UK Frontend served
from this origin. Sign-in is OpenID Connect (authorization code with PKCE) at the identity
provider; the session is a signed cookie holding who the user is and the form token. Every page
reads the hub store as the user's own PostgreSQL role (row-level security by owning authority),
and every view of a child or of evidence is in the access log.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

from authlib.integrations.starlette_client import OAuth, OAuthError
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, PrefixLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from consumers.concerns import TriageError
from hubstream.protect import ProtectionError, decrypt_narrative
from producers.decisions import publish_decision
from web import forms, store
from web.config import ASSETS, STYLESHEET, WebSettings, discovery_url
from web.people import AUTHORITIES, NoAccess, NotAllowed, User, user_from_claims

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SERVICE = "Safeguarding hub"
CLASSIFICATION = "OFFICIAL-SENSITIVE"
LONDON = ZoneInfo("Europe/London")  # times as the hub reads them
RULE_NAMES = {
    "repeat_missing": "Repeat missing",
    "return_interview_overdue": "Return interview overdue",
    "hotspot": "Hotspot",
    "association": "Association",
}


class SignInNeeded(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class BadToken(Exception):
    """A form without its session's token (HTTP 403)."""


def environment() -> Environment:
    env = Environment(
        loader=ChoiceLoader(
            [
                FileSystemLoader(HERE / "templates"),
                PrefixLoader({"govuk_frontend_jinja": PackageLoader("govuk_frontend_jinja")}),
            ]
        ),
        autoescape=select_autoescape(("html",)),
    )
    env.filters["when"] = lambda value: value.astimezone(LONDON).strftime("%-d %b %Y %H:%M") if value else ""
    env.filters["day"] = lambda value: value.strftime("%-d %b %Y") if value else ""
    env.filters["rule_name"] = lambda rule: RULE_NAMES.get(rule, rule.replace("_", " ").capitalize())
    env.filters["age"] = _age
    env.globals.update(
        SERVICE=SERVICE,
        CLASSIFICATION=CLASSIFICATION,
        AUTHORITIES=AUTHORITIES,
        DECISION_KINDS=forms.DECISION_KINDS,
        RISK_LEVELS=forms.RISK_LEVELS,
    )
    return env


def _age(value: datetime | None) -> str:
    if value is None:
        return ""
    days = (datetime.now(UTC) - value).days
    return "today" if days <= 0 else f"{days} day{'s' if days != 1 else ''}"


def current_user(request: Request) -> User:
    data = request.session.get("user")
    if not data:
        raise SignInNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return User.from_session(data)


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


async def checked_form(request: Request) -> dict[str, str]:
    """The posted form, once its token matches the session's (else 403: nothing is done)."""
    form = await request.form()
    given = str(form.get("csrf_token") or "")
    expected = str(request.session.get("csrf") or "")
    if not expected or not secrets.compare_digest(given, expected):
        raise BadToken()
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


CurrentUser = Annotated[User, Depends(current_user)]
CheckedForm = Annotated[dict[str, str], Depends(checked_form)]


def create_app(config: WebSettings | None = None) -> FastAPI:
    config = config or WebSettings()
    config.check_assets()
    hub_store = store.Store(config.dsn)
    oauth = OAuth()
    oauth.register(
        "idp",
        client_id=config.client_id,
        client_secret=config.client_secret,
        server_metadata_url=discovery_url(config.issuer),
        client_kwargs={"scope": "openid profile", "code_challenge_method": "S256"},
    )
    idp_origin = "{0.scheme}://{0.netloc}".format(urlsplit(config.issuer))
    templates = environment()

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        hub_store.close()

    app = FastAPI(title=SERVICE, docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.config = config
    app.state.store = hub_store

    # -- the response: who may frame it, run scripts in it, keep it ------------------------------

    @app.middleware("http")
    async def secure_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.nonce = secrets.token_urlsafe(16)
        started = time.perf_counter()
        response = await call_next(request)
        # The page's own time in this server, for the page bench and a browser's timing panel.
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        static = request.url.path.startswith(("/assets/", "/static/", "/vendor/"))
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; "
            f"script-src 'self' 'nonce-{request.state.nonce}'; "
            "style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; "
            f"form-action 'self' {idp_origin}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if static:
            response.headers["Cache-Control"] = "public, max-age=3600"
        else:  # every page may carry personal data
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response

    app.add_middleware(
        SessionMiddleware,
        secret_key=config.session_secret,
        session_cookie="hubstream_session",
        max_age=config.session_hours * 3600,
        same_site="lax",  # sent on the identity provider's redirect back, never on other sites' posts
        https_only=config.secure_cookies,
    )
    app.mount("/assets", StaticFiles(directory=ASSETS / "assets"), name="assets")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.mount("/vendor/govuk", StaticFiles(directory=ASSETS), name="govuk")
    app.mount("/vendor/build", StaticFiles(directory=STYLESHEET.parent), name="build")

    # -- who is asking ---------------------------------------------------------------------------

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        data = request.session.get("user")
        page = templates.get_template(template).render(
            request=request,
            user=User.from_session(data) if data else None,
            csrf_token=csrf_token(request),
            cspNonce=request.state.nonce,
            flash=request.session.pop("flash", None),
            **context,
        )
        return HTMLResponse(page, status_code=status)

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded) -> Response:
        return RedirectResponse("/sign-in?" + urlencode({"next": exc.next_path}), status_code=303)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: NotAllowed) -> Response:
        log.warning("refused: %s", exc)
        return render(
            request,
            "error.html",
            403,
            title="You cannot see this page",
            message="Your role or your authority does not give you access to this page.",
        )

    @app.exception_handler(BadToken)
    async def bad_token(request: Request, exc: BadToken) -> Response:
        return render(
            request,
            "error.html",
            403,
            title="The form has expired",
            message="Go back, reload the page and try again. Nothing was changed.",
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return render(
                request,
                "error.html",
                404,
                title="Page not found",
                message="There is nothing here that you can see.",
            )
        return render(
            request, "error.html", exc.status_code, title="This did not work", message=str(exc.detail)
        )

    @app.exception_handler(LookupError)
    async def not_found(request: Request, exc: LookupError) -> Response:
        return render(
            request,
            "error.html",
            404,
            title="Page not found",
            message="There is nothing here that you can see.",
        )

    # -- signing in and out ---------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/concerns", status_code=303)

    @app.get("/sign-in")
    async def sign_in(request: Request, next: str = "/concerns") -> Response:
        request.session["next"] = forms.safe_next(next)
        redirect_uri = str(request.url_for("signed_in"))
        return await oauth.idp.authorize_redirect(request, redirect_uri)  # type: ignore[no-any-return]

    @app.get("/auth/callback", name="signed_in")
    async def signed_in(request: Request) -> Response:
        try:
            token = await oauth.idp.authorize_access_token(request)
            user = user_from_claims(token.get("userinfo") or {})
        except OAuthError as exc:
            log.warning("sign-in refused: %s", exc)
            return render(
                request,
                "error.html",
                401,
                title="Sign-in did not work",
                message=f"The identity provider said: {exc.description or exc.error}. Try again.",
            )
        except NoAccess as exc:
            log.warning("no access: %s", exc)
            return render(
                request, "error.html", 403, title="Your account has no access to the hub", message=str(exc)
            )
        next_path = forms.safe_next(request.session.pop("next", None))
        request.session.clear()
        request.session["user"] = user.to_session()
        request.session["id_token"] = token.get("id_token")
        request.session["csrf"] = secrets.token_urlsafe(32)
        log.info("%s signed in (%s, %s)", user.username, user.kind, user.authority_name)
        return RedirectResponse(next_path, status_code=303)

    @app.post("/sign-out")
    async def sign_out(request: Request, form: CheckedForm) -> Response:
        id_token = request.session.get("id_token")
        request.session.clear()
        metadata = await oauth.idp.load_server_metadata()
        end = metadata.get("end_session_endpoint")
        back = str(request.url_for("signed_out"))
        if not end:
            return RedirectResponse(back, status_code=303)
        query = {"post_logout_redirect_uri": back, "client_id": config.client_id}
        if id_token:
            query["id_token_hint"] = id_token
        return RedirectResponse(f"{end}?{urlencode(query)}", status_code=303)

    @app.get("/signed-out", name="signed_out")
    def signed_out(request: Request) -> HTMLResponse:
        return render(request, "signed_out.html")

    # -- the queue, a concern and a child ---------------------------------------------------------

    # kind: (what reads it, where its evidence is, why it is read (the access log), its template)
    records = {
        "concern": (store.concern, "evidence_rows", "triage: concern and its evidence", "concern.html"),
        "child": (store.child, "evidence", "safeguarding: child's chronology and identity", "child.html"),
    }

    def record_page(
        request: Request,
        user: User,
        kind: str,
        key: str,
        status: int = 200,
        problems: forms.Problems | None = None,
        values: dict[str, str] | None = None,
    ) -> HTMLResponse:
        """A concern or a child, its view in the access log (same transaction), narratives for
        those who may read them; 403 for another authority's, 404 for none."""
        load, evidence, purpose, template = records[kind]
        with hub_store.as_user(user) as cur:
            row = load(cur, key)
            if row is None:
                store.refuse_or_not_found(cur, kind, key)
            store.log_view(cur, user, purpose, [key, *(e["event_id"] for e in row[evidence])])
        for e in row[evidence]:
            e["narrative_text"] = _narrative(user, e.get("narrative"))
        context = {kind: row, "problems": problems or forms.Problems(), "values": values or {}}
        return render(request, template, status, **context)

    @app.get("/concerns")
    def concerns_page(
        request: Request,
        user: CurrentUser,
        status: str = "open",
        severity: str = "",
        rule: str = "",
        authority: str = "",
        sort: str = "changed",
        page: int = 1,
    ) -> HTMLResponse:
        user.require("see_queue")
        wanted = store.QueueFilter(
            status=status if status in ("open", "", *store.STATUSES) else "open",
            severity=severity if severity in store.SEVERITIES else "",
            rule=rule if rule in store.RULES else "",
            authority=authority if authority in AUTHORITIES else "",
            sort=sort if sort in store.SORTS else "changed",
            page=max(page, 1),
        )
        with hub_store.as_user(user) as cur:
            rows, total = store.queue(cur, wanted)
        more = total > store.COUNT_UP_TO
        total = min(total, store.COUNT_UP_TO)
        pages = max(1, -(-total // store.PAGE_SIZE))
        return render(request, "queue.html", rows=rows, total=total, more=more, filter=wanted, pages=pages)

    @app.get("/concerns/{concern_id}")
    def concern_page(request: Request, concern_id: str, user: CurrentUser) -> HTMLResponse:
        user.require("see_concern")
        return record_page(request, user, "concern", concern_id)

    @app.post("/concerns/{concern_id}")
    def triage_concern(
        request: Request,
        concern_id: str,
        user: CurrentUser,  # before the form: an anonymous post goes to sign-in
        form: CheckedForm,
    ) -> Response:
        user.require("triage")
        action = form.get("action", "")
        try:
            with hub_store.as_user(user) as cur:
                change = store.triage(
                    cur,
                    user,
                    concern_id,
                    action,
                    note=form.get("note"),
                    owner=form.get("owner"),
                    reason=form.get("reason"),
                )
        except TriageError as exc:
            problems = forms.Problems()
            problems.add(f"{action}-{exc.field}" if exc.field != "action" else "action", exc.message)
            return record_page(request, user, "concern", concern_id, 400, problems, form)
        request.session["flash"] = f"Concern {change.to_status}: {change.note or change.action}"
        return RedirectResponse(f"/concerns/{concern_id}", status_code=303)

    # -- a child ----------------------------------------------------------------------------------

    @app.get("/children/{child_key}")
    def child_page(request: Request, child_key: str, user: CurrentUser) -> HTMLResponse:
        user.require("see_child")
        return record_page(request, user, "child", child_key)

    @app.post("/children/{child_key}/decisions")
    def decide(
        request: Request,
        child_key: str,
        user: CurrentUser,  # before the form: an anonymous post goes to sign-in
        form: CheckedForm,
    ) -> Response:
        user.require("decide")
        with hub_store.as_user(user) as cur:
            row = store.child(cur, child_key)
            if row is None:
                store.refuse_or_not_found(cur, "child", child_key)
        decision, problems = forms.decision(form)
        if decision is None:
            return record_page(request, user, "child", child_key, 400, problems, form)
        authority = row["authority"] if row["authority"] in AUTHORITIES else user.authority
        if authority is None:
            authority = config.settings.area
        name = AUTHORITIES.get(authority, config.settings.authority_name)
        event_id = publish_decision(
            config.settings,
            decision.kind,
            child_key=child_key,
            decided_by=user.username,
            nhs_number=decision.nhs_number or row["nhs_number"],
            risk=decision.risk,
            reason=decision.reason,
            authority=name,
            area=authority,
            principal="hub-web",
        )
        log.info("%s published %s %s for %s", user.username, decision.kind, event_id, child_key)
        request.session["flash"] = (
            f"{forms.DECISION_KINDS[decision.kind]}: published (decision {event_id}). "
            "It shows on the tracker once the hub store has it."
        )
        return RedirectResponse(f"/children/{child_key}", status_code=303)

    # -- the access log ---------------------------------------------------------------------------

    @app.get("/access-log")
    def access_log_page(request: Request, user: CurrentUser, page: int = 1) -> HTMLResponse:
        user.require("see_access_log")
        with hub_store.as_user(user) as cur:
            rows = store.access_log(cur, page)
        return render(request, "access_log.html", rows=rows, page=max(page, 1))

    return app


def _narrative(user: User, sealed: str | None) -> str | None:
    """The narrative in words for a reader allowed it; a line saying why not for anyone else."""
    if sealed is None:
        return None
    if not user.may("read_narrative"):
        return "(withheld: your role does not read narratives)"
    try:
        return decrypt_narrative(sealed)
    except ProtectionError as exc:
        log.error("narrative could not be decrypted: %s", exc)
        return "(this narrative cannot be decrypted with this deployment's key)"
