"""One APIRouter per resource; handlers validate, call a service, serialise."""
from ..schemas import ErrorOut


def errors(*codes: int) -> dict:
    """OpenAPI entries for the error statuses a route can answer."""
    text = {
        401: "missing or wrong bearer token (only when the server has MNEMOSCOPE_TOKEN)",
        404: "no such checkpoint or job",
        413: "the upload (or a JSON body over 1 MiB) is larger than the server accepts",
        415: "not multipart/form-data",
        422: "the request is malformed, cannot be done or is over this server's budget; `detail` says why",
        429: "too many jobs are waiting; try again after `Retry-After` seconds",
        503: "the server is too busy, or the request was stopped at its time limit; try again",
    }
    return {code: {"model": ErrorOut, "description": text[code]} for code in codes}
