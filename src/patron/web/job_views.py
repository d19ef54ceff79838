"""The jobs page: run an analysis or import a file from the browser, and watch each job's
progress until it finishes, whichever server process runs it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from patron.analytics.pipeline import STEPS
from patron.analytics.tasks import run_analysis
from patron.api.deps import ROLE_PERMISSIONS, Permission
from patron.ingest.mapping import Mapping, preset
from patron.ingest.tasks import import_file
from patron.kit.clock import utcnow
from patron.kit.errors import InvalidInput, NotFound
from patron.web.jobs import Jobs, Report
from patron.web.service import WebService, Who
from patron.web.views import Reader, SessionDep, _check_csrf, _page, needs, router

Analyst = Annotated[Who, Depends(needs(Permission.RUN_ANALYTICS))]
Importer = Annotated[Who, Depends(needs(Permission.WRITE_CUSTOMERS))]
_ANALYSIS_STEPS = ("read", *STEPS, "write")


def _jobs(request: Request) -> Jobs:
    jobs: Jobs = request.app.state.jobs
    return jobs


@router.get("/jobs", response_class=HTMLResponse)
def jobs(*, request: Request, session: SessionDep, who: Reader) -> HTMLResponse:
    allowed = ROLE_PERMISSIONS[who.role]
    return _page(request, "jobs.html", who, jobs=_jobs(request).recent(session),
                 can_analyze=Permission.RUN_ANALYTICS in allowed,
                 can_import=Permission.WRITE_CUSTOMERS in allowed)  # fmt: skip


@router.get("/jobs/{job_id}", response_model=None)
def job(*, request: Request, session: SessionDep, job_id: str, who: Reader) -> Response:
    found = _jobs(request).get(session, job_id)
    if found is None:
        raise NotFound(f"job {job_id} does not exist")
    return JSONResponse({"status": found.status, "done": found.done, "step": found.step,
                         "result": found.result})  # fmt: skip


@router.post("/jobs/analysis", response_model=None)
def analyze(
    *, request: Request, session: SessionDep, who: Analyst, csrf: Annotated[str, Form()] = ""
) -> Response:
    _check_csrf(request, csrf)
    factory = request.app.state.sessionmaker
    as_of = utcnow()

    def work(report: Report) -> str:
        def step(name: str) -> None:
            index = _ANALYSIS_STEPS.index(name) + 1 if name in _ANALYSIS_STEPS else 0
            report(index / len(_ANALYSIS_STEPS), name.replace("_", " "))

        run = run_analysis(factory, as_of=as_of, progress=step)
        return f"analysis run {run.id}: {run.customers:,} customers scored"

    _jobs(request).start("analysis", f"analysis as of {as_of:%Y-%m-%d %H:%M}", who.username, work)
    WebService(session).record(who.username, "analysis.start", as_of=as_of.isoformat())
    session.commit()
    return RedirectResponse("/ui/jobs", status_code=303)


@router.post("/jobs/import", response_model=None)
def start_import(
    *, request: Request, session: SessionDep, who: Importer,
    kind: Annotated[Literal["customers", "orders", "products", "events"], Form()],
    upload: Annotated[UploadFile, File()], mapping: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    """Keep the uploaded file and import it in the background, as ``patron import`` does:
    rejected rows go to the rejects report beside it."""
    _check_csrf(request, csrf)
    if not upload.filename:
        raise InvalidInput("upload: choose a file")
    chosen = preset(mapping, kind) if mapping else Mapping()
    folder = Path(tempfile.mkdtemp(prefix="patron-import-"))
    path = folder / Path(upload.filename).name
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out)
    factory = request.app.state.sessionmaker

    def work(report: Report) -> str:
        def read(consumed: int, size: int) -> None:
            report(consumed / size if size else 0.0, f"{consumed:,} of {size:,} bytes read")

        done = import_file(factory, kind, path, mapping=chosen, progress=read)
        rejects = f"; rejects in {done.rejects_path}" if done.rejects_path else ""
        return (f"{done.read:,} rows read: {done.imported:,} imported, {done.merged:,} merged, "
                f"{done.rejected:,} rejected{rejects}")  # fmt: skip

    _jobs(request).start("import", f"import of {path.name} ({kind})", who.username, work)
    WebService(session).record(who.username, "import.start", target=path.name, kind=kind)
    session.commit()
    return RedirectResponse("/ui/jobs", status_code=303)
