"""Prompt-pair probes: upload a JSONL of clean/corrupted prompts, list, read, delete.

A job uses one by naming it as its task: `{"task": {"name": "prompt_pairs", "params":
{"probe": "<id>"}}}` (report, patching, ablations, gradients)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..deps import AuthDep, StoreDep
from ..errors import Invalid, UnsupportedMedia
from ..services import probes as service
from . import errors

router = APIRouter(prefix="/api/probes", tags=["probes"])


class ProbeOut(BaseModel):
    id: str
    name: str
    filename: str
    pairs: int = Field(description="clean/corrupted pairs in the probe")
    patchable: int = Field(description="pairs with a corrupted_answer other than the answer (what patching scores)")
    max_tokens: int = Field(description="tokens of its longest prompt")
    max_id: int = Field(description="largest token id it uses: a model needs a vocabulary above it")
    tokenized: bool = Field(description="whether strings were turned into ids with an uploaded tokenizer.json")
    size_bytes: int
    created_at: str
    task: dict[str, Any] = Field(description="the task a job request names to use this probe")


class ProbeDetail(ProbeOut):
    items: list[dict[str, Any]] = Field(description='the pairs as token ids: {"clean", "corrupted", "answer", '
                                                    '"corrupted_answer"}')


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": 'JSONL, one object a line: {"clean": [ids] | "text", "corrupted": '
                                                '[ids] | "text", "answer": id | "text", "corrupted_answer"?: ...}'},
                        "tokenizer": {"type": "string", "format": "binary",
                                      "description": "optional tokenizer.json (Hugging Face `tokenizers`) for strings"},
                        "name": {"type": "string", "description": "optional display name"},
                    },
                },
            },
        },
    },
}


@router.post(
    "",
    status_code=201,
    response_model=ProbeOut,
    summary="Upload a prompt-pair probe",
    description=(
        f"Multipart: `file` (the JSONL), optional `tokenizer` (a tokenizer.json, needed when prompts are strings) "
        f"and `name`. The whole request may be at most {service.LIMITS['bytes']} bytes, the probe "
        f"{service.LIMITS['pairs']} pairs of at most {service.LIMITS['tokens_per_prompt']} tokens a prompt; a pair's "
        "clean and corrupted prompts must have the same number of tokens. Parsed strictly (a 422 names the line), "
        "stored as token ids under its sha256: 201 when stored, 200 with the same record when it was stored before."
    ),
    responses={200: {"model": ProbeOut, "description": "this probe was already stored"},
               **errors(401, 413, 415, 422)},
    openapi_extra=_UPLOAD_BODY,
)
async def upload_probe(request: Request, response: Response, store: StoreDep, _: AuthDep) -> dict:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UnsupportedMedia("expected multipart/form-data with the JSONL in the field `file`")
    try:
        form = await request.form(max_files=2, max_fields=1)
    except StarletteHTTPException as exc:  # malformed multipart, too many parts: the request's fault
        raise Invalid(f"the upload could not be read ({exc.detail}); a probe upload has the fields file, "
                      "tokenizer (optional) and name (optional)") from None
    try:
        probe, tokenizer, name = form.get("file"), form.get("tokenizer"), form.get("name")
        if not isinstance(probe, UploadFile):
            raise Invalid("no file: send the JSONL in the multipart field `file`")
        if tokenizer is not None and not isinstance(tokenizer, UploadFile):
            raise Invalid("`tokenizer` must be a file (a tokenizer.json)")
        data = await probe.read()
        tokenizer_json = await tokenizer.read() if tokenizer is not None else None
        filename = probe.filename
    finally:
        await form.close()
    record, created = await run_in_threadpool(service.ingest, store, data, filename,
                                              name if isinstance(name, str) else None, tokenizer_json)
    response.status_code = 201 if created else 200
    return service.public(record)


@router.get("", response_model=list[ProbeOut], summary="List probes (oldest first)")
def list_probes(store: StoreDep) -> list[dict]:
    return [service.public(r) for r in store.list_probes()]


@router.get("/{probe_id}", response_model=ProbeDetail, responses=errors(404), summary="One probe, with its pairs")
def get_probe(probe_id: str, store: StoreDep) -> dict:
    return service.detail(store, service.get_or_404(store, probe_id))


@router.delete("/{probe_id}", status_code=204, responses=errors(401, 404),
               summary="Delete a probe (jobs that used it keep their results)")
def delete_probe(probe_id: str, store: StoreDep, _: AuthDep) -> Response:
    service.get_or_404(store, probe_id)
    store.delete_probe(probe_id)
    return Response(status_code=204)
