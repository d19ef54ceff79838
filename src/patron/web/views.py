"""The pages: log in and out, the dashboard, customer search and the customer 360.

Every page but the login needs a logged-in user; the session is a signed cookie (HttpOnly,
SameSite=Strict, Secure when the public URL is https) that carries the user's session
generation: a logout, a new password or disabling the account raises the generation, and
every cookie holding an older one is refused, copies included. Each form carries the session's
CSRF token and a POST without it is refused. A domain error shows its message on an error
page with its status, never a stack trace.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from patron.api.deps import ROLE_PERMISSIONS, Permission
from patron.kit.errors import Forbidden, InvalidInput, PatronError, Unauthorized
from patron.kit.settings import DEFAULT_SECRET_KEY
from patron.models import Role
from patron.web import i18n
from patron.web.jobs import Jobs
from patron.web.service import WebService, Who

HERE = Path(__file__).parent
VENDOR = HERE / "node_modules"
"""Third-party JS and CSS, installed from the npm registry by the setup (never committed)."""

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)


templates.env.filters |= {
    "money": i18n.money, "number": i18n.number, "pct": i18n.percent, "day": i18n.day,
    "moment": i18n.moment, "term": i18n.term,
}  # fmt: skip
templates.env.globals["t"] = i18n.text
templates.env.globals["charts"] = (VENDOR / "chart.js" / "dist" / "chart.umd.js").exists()


def _session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


def _check_csrf(request: Request, token: str) -> None:
    expected = str(request.session.get("csrf", "")).encode()
    if not token or not secrets.compare_digest(token.encode(), expected):
        raise Forbidden("the form has expired or did not come from this site: reload and retry")


def _page(
    request: Request, template: str, who: Who | None, /, status: int = 200, **context: Any
) -> HTMLResponse:
    lang = i18n.choose(request.session.get("lang"), request.headers.get("accept-language", ""))
    context |= {"who": who, "csrf": csrf_token(request), "request": request, "lang": lang}
    return templates.TemplateResponse(request, template, context, status_code=status)


def needs(permission: Permission) -> Callable[[Request, Session], Who]:
    """A logged-in user whose role allows ``permission``."""

    def check(request: Request, session: SessionDep) -> Who:
        username, generation = request.session.get("user"), request.session.get("generation")
        who = None
        if username and isinstance(generation, int):
            who = WebService(session).current(str(username), generation)
        if who is None:
            raise Unauthorized("log in first")
        if permission not in ROLE_PERMISSIONS[who.role]:
            raise Forbidden(f"role {who.role.value} may not {permission.value}")
        return who

    return check


Reader = Annotated[Who, Depends(needs(Permission.READ_CUSTOMERS))]


def error_page(request: Request, exc: PatronError) -> Response:
    """A domain error on a page: the login page when not logged in, else its message."""
    if isinstance(exc, Unauthorized):
        # an ended session is dropped from the cookie too; the chosen language stays
        request.session.pop("user", None)
        request.session.pop("generation", None)
        return RedirectResponse("/ui/login", status_code=303)
    return _page(request, "error.html", None, status=exc.status, message=exc.message)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None)


@router.post("/login", response_model=None)
def log_in(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form(max_length=80)],
    password: Annotated[str, Form(max_length=200)],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    _check_csrf(request, csrf)
    if request.app.state.ui_refusal:
        raise Forbidden(request.app.state.ui_refusal)
    service = WebService(session)
    try:
        who = service.log_in(username, password)
    except PatronError as exc:
        return _page(request, "login.html", None, status=400, error=exc.message, username=username)
    session.commit()
    lang = request.session.get("lang")
    request.session.clear()  # a new session on login: a fixed session id cannot be planted
    request.session["user"] = who.username
    request.session["generation"] = who.generation
    if lang:
        request.session["lang"] = lang
    csrf_token(request)
    return RedirectResponse("/ui/", status_code=303)


@router.post("/language", response_model=None)
def language(
    request: Request, lang: Annotated[str, Form()], csrf: Annotated[str, Form()] = "",
    back: Annotated[str, Form()] = "/ui/",
) -> Response:  # fmt: skip
    """Keep the chosen language in the session."""
    _check_csrf(request, csrf)
    if lang not in i18n.LANGUAGES:
        raise InvalidInput(f"lang: one of {', '.join(i18n.LANGUAGES)}")
    request.session["lang"] = lang
    # only a path of this site: a form cannot send the user elsewhere
    target = back if back.startswith("/ui/") and "//" not in back else "/ui/"
    return RedirectResponse(target, status_code=303)


@router.post("/logout", response_model=None)
def log_out(
    request: Request, session: SessionDep, who: Reader, csrf: Annotated[str, Form()] = ""
) -> Response:
    """End every session of the user, this browser's and any other's."""
    _check_csrf(request, csrf)
    WebService(session).log_out(who.username)
    session.commit()
    lang = request.session.get("lang")
    request.session.clear()
    if lang:
        request.session["lang"] = lang
    return RedirectResponse("/ui/login", status_code=303)


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, session: SessionDep, who: Reader) -> HTMLResponse:
    return _page(request, "dashboard.html", who, **WebService(session).dashboard())


@router.get("/audit", response_class=HTMLResponse)
def audit(
    request: Request, session: SessionDep,
    who: Reader,
) -> HTMLResponse:  # fmt: skip
    """The newest changes made through the pages, for administrators."""
    if who.role is not Role.ADMIN:
        raise Forbidden(f"role {who.role.value} may not read the audit log")
    return _page(request, "audit.html", who, records=WebService(session).audit(limit=500))


@router.get("/customers", response_class=HTMLResponse)
def customers(
    request: Request, session: SessionDep, who: Reader,
    q: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:  # fmt: skip
    found = WebService(session).search(q) if q else []
    return _page(request, "customers.html", who, q=q, found=found)


@router.get("/customers/{customer_id}", response_class=HTMLResponse)
def customer(request: Request, session: SessionDep, who: Reader, customer_id: int) -> HTMLResponse:
    return _page(request, "customer.html", who, **WebService(session).customer(customer_id))


def install(app: FastAPI, *, secret_key: str, public_url: str) -> None:
    """Serve the pages on ``app``: the session cookie, the static files, the routes, and
    domain and form errors as pages under ``/ui``."""
    # the session cookie is signed with the secret key: the public default would let
    # anyone forge a session, so a server others can reach refuses logins until it is set
    local = urlsplit(public_url).hostname in {"127.0.0.1", "localhost", "::1"}
    app.state.ui_refusal = (
        None if local or secret_key != DEFAULT_SECRET_KEY
        else "this server still uses the default PATRON_SECRET_KEY: set your own to log in"
    )  # fmt: skip
    app.add_middleware(
        SessionMiddleware, secret_key=secret_key, session_cookie="patron_session",
        same_site="strict", https_only=public_url.startswith("https://"), max_age=8 * 3600,
    )  # fmt: skip
    app.state.jobs = Jobs(app.state.sessionmaker)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    if VENDOR.is_dir():
        app.mount("/ui/vendor", StaticFiles(directory=VENDOR), name="ui-vendor")
    # the other pages add their routes to this router when imported
    from patron.web import (  # noqa: F401
        campaign_views,
        customer_views,
        job_views,
        loyalty_views,
        segment_views,
    )

    app.include_router(router)
    json_errors = app.exception_handlers[PatronError]
    json_invalid = app.exception_handlers[RequestValidationError]

    async def on_error(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/ui/") and isinstance(exc, PatronError):
            return error_page(request, exc)
        answer = json_errors(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    async def on_invalid(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/ui/") and isinstance(exc, RequestValidationError):
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
            )
            return error_page(request, InvalidInput(fields))
        answer = json_invalid(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    app.add_exception_handler(PatronError, on_error)
    app.add_exception_handler(RequestValidationError, on_invalid)
