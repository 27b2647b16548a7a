"""``tandem serve``: the trained pipeline behind a small FastAPI app.

``POST /predict`` takes a batch as JSON, in one of three shapes:

- ``{"rows": [{"column": value, ...}, ...]}``: named raw columns (any model);
- ``{"instances": [[v1, v2, ...], ...]}``: values in the order of ``/metadata``'s feature names;
- ``{"images": ["<base64 PNG or JPEG>", ...]}`` or ``{"pixels": [[[H rows of W values]], ...]}``:
  images, for an image model (USPS: 16x16), scaled exactly like ``tandem predict`` scales
  pictures, polarity included (``tandem.inference.pixels_to_row``).

Every malformed request gets a 4xx answer that says what is wrong (422: wrong feature count,
missing column, NaN/infinity, a number beyond float32's range, not a number, bad image; 413: a
body, batch or image over the server's limits); a 5xx would be a bug. Messages quote at most
a short excerpt of an offending value. ``GET /health`` and ``GET /metadata`` (model version =
the artifact's DVC hash, what is served, classes, feature names, metrics, limits) describe the
service. The model runs in onnxruntime from ``model.onnx`` or in torch from the saved
estimator (``backend``); both load without pickle and serve the same model, the one
eval.json's headline scores: test-time augmentation where the entry's ``evaluate.tta`` is on,
classes named by the entry's ``label_names`` in natural order (``tandem.inference.Serving``).

Bounds (``Limits``), so that one client cannot take the memory or the event loop from the
others: the body is cut off at ``max_body_bytes`` (the Content-Length, then the bytes as they
stream in: a 413 before the rest is read, ``BodyLimit``); a batch holds at most ``max_batch``
rows; an image's pixel count is read from its header and one over ``max_image_pixels`` is
refused before it is decoded; images are decoded, reduced to the model's shape and dropped one
at a time. Parsing, checking and inference run in worker threads, at most
``CONCURRENT_BATCHES`` batches at once, never on the event loop, so ``/health`` answers while
another client uploads or a batch is predicted.
"""

from __future__ import annotations

import base64
import binascii
import io as _io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect

from tandem import inference
from tandem.inference import InputError, OnnxModel, Pipeline, excerpt

Backend = Literal["onnx", "torch"]
Value = float | int | str | bool | None
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_BODY_MB = 16.0
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
CONCURRENT_BATCHES = 2  # batches parsed or predicted at once; the others wait their turn
IMAGE_FORMATS = ("PNG", "JPEG")  # what an images source trains on (.png, .jpg, .jpeg)
SHOWN_ERRORS = 5  # validation errors listed in one answer
SPARE_VALUES = 64  # per row, beyond the model's features: ids and other extra columns


class TooLarge(InputError):
    """A request over one of the server's limits: answered 413, not 422."""


@dataclass(frozen=True)
class Limits:
    """What one request may hold (``tandem serve``'s --max-batch, --max-body-mb,
    --max-image-pixels)."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1e6)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive whole number; got {value!r}")

    @classmethod
    def of(
        cls,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_body_mb: float = DEFAULT_MAX_BODY_MB,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> Limits:
        if not max_body_mb > 0:
            raise ValueError(f"max_body_mb must be positive; got {max_body_mb!r}")
        return cls(max_batch, max(1, int(max_body_mb * 1e6)), max_image_pixels)


class PredictRequest(BaseModel):
    """One batch; exactly one of the fields is given."""

    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Value]] | None = Field(default=None, description="named raw columns")
    instances: list[list[Value]] | None = Field(
        default=None, description="values in the order of /metadata's feature_names"
    )
    images: list[str] | None = Field(default=None, description="base64-encoded PNG/JPEG images")
    pixels: list[list[list[float]]] | list[list[list[list[float]]]] | None = Field(
        default=None,
        description="grey images of the model's height x width (any range, either polarity)",
    )

    def size(self) -> int:
        return max(len(getattr(self, name) or []) for name in FIELDS)


FIELDS = ("rows", "instances", "images", "pixels")


class Predictor:
    """The loaded model plus everything the endpoints need to check and run a batch."""

    def __init__(
        self,
        model_dir: str | Path,
        backend: Backend = "onnx",
        *,
        threads: int = 0,
        limits: Limits | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.backend = backend
        self.limits = limits or Limits()
        if backend not in ("onnx", "torch"):
            raise ValueError(f"backend must be 'onnx' or 'torch'; got {backend!r}")
        self.pipe: Pipeline = inference.load(self.model_dir)
        if backend == "onnx":
            self.onnx: OnnxModel | None = OnnxModel(
                self.model_dir / inference.ONNX_FILE, threads=threads or None
            )
            artifact = self.model_dir / inference.ONNX_FILE
        else:
            self.onnx = None
            artifact = self.model_dir / inference.MODEL
            if threads:
                import torch

                torch.set_num_threads(threads)
        md5, source = inference.dvc_md5(artifact)
        self.version = {"artifact": str(artifact), "md5": md5, "source": source}
        if self.onnx is not None:  # the file says what it serves
            self.served, self.classes = self.onnx.served, self.onnx.classes
        else:
            self.served, self.classes = self.pipe.serving.served, self.pipe.classes
        self.metrics = served_metrics(find_metrics(self.model_dir), self.served)

    # ------------------------------------------------------------------ batches
    def answer(self, body: bytes) -> tuple[int, bytes]:
        """(status, JSON body) for a /predict body: 200 and the predictions, or the 4xx that
        says what is wrong. Runs in a worker thread: parsing, checks, decoding, inference."""
        try:
            self.check_value_count(body)
            request = parse_request(body)
            size = request.size()
            if size > self.limits.max_batch:
                raise TooLarge(
                    f"batch of {size} rows is larger than max_batch={self.limits.max_batch} "
                    "(--max-batch)"
                )
            content = self.predict(self.frame(request))
        except TooLarge as exc:
            return 413, _json({"detail": str(exc)})
        except RequestError as exc:
            return 422, _json({"detail": exc.errors})
        except InputError as exc:
            return 422, _json({"detail": str(exc)})
        return 200, _json(content)

    def check_value_count(self, body: bytes) -> None:
        """Refuse, before parsing, a body with more values than ``max_batch`` rows of the model
        could hold (its features plus ``SPARE_VALUES`` per row). Values in JSON arrays and
        objects are separated by commas, and counting them costs milliseconds where parsing
        them costs seconds (with Python's interpreter lock held, so the event loop waits): a
        body within the byte limit but of millions of tiny values, or one row of millions of
        unknown keys, is refused this way."""
        budget = self.limits.max_batch * (len(self.pipe.feature_names) + SPARE_VALUES)
        count = body.count(b",")
        if count >= budget:
            raise TooLarge(
                f"the body holds about {count:,} values; max_batch={self.limits.max_batch} rows "
                f"of this model's {len(self.pipe.feature_names)} features hold at most "
                f"{budget:,} (--max-batch)"
            )

    def frame(self, request: PredictRequest) -> pd.DataFrame:
        """The request as a frame of raw columns, or an InputError that says what is wrong."""
        given = [name for name in FIELDS if getattr(request, name) is not None]
        if len(given) != 1:
            raise InputError(
                f"give exactly one of rows, instances, images, pixels; got {given or 'none'}"
            )
        if request.rows is not None:
            frame = self._rows(request.rows)
        elif request.instances is not None:
            frame = self._instances(request.instances)
        else:
            frame = self._images(request.images, request.pixels)
        if len(frame) == 0:
            raise InputError("the batch is empty")
        return inference.prepare_frame(frame, self.pipe)

    def _rows(self, rows: list[dict[str, Value]]) -> pd.DataFrame:
        """Only the model's columns are read (others, ids say, are ignored unread): a row of a
        million unknown keys costs no more than one of the model's columns."""
        names = self.pipe.feature_names
        present = [n for n in names if any(n in row for row in rows)]
        columns = {}
        for name in present:
            values = [row.get(name) for row in rows]
            for i, value in enumerate(values):
                _check_number(value, lambda i=i, name=name: f"rows[{i}][{name!r}]")
            columns[name] = values
        return pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))

    def _instances(self, instances: list[list[Value]]) -> pd.DataFrame:
        names = self.pipe.feature_names
        for i, row in enumerate(instances):
            if len(row) != len(names):
                raise InputError(
                    f"instance {i} has {len(row)} values; the model takes {len(names)} "
                    f"features (see /metadata)"
                )
        if not instances:
            return pd.DataFrame(columns=names)
        if not self.pipe.by_columns:
            try:  # numbers only (image pixels): one float array, checked at once
                array = np.asarray(instances, dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                array = None
            if array is not None:
                bad = ~np.isfinite(array) | (np.abs(np.nan_to_num(array)) > inference.FLOAT32_MAX)
                if bad.any():
                    i, j = (int(k) for k in np.argwhere(bad)[0])
                    if instances[i][j] is None:
                        raise InputError(
                            f"{_instance_field(i, j, names)} is missing (null); this model "
                            "takes finite numbers only"
                        )
                    _refuse_number(instances[i][j], _instance_field(i, j, names), array[i, j])
                return pd.DataFrame(array, columns=names)
        for i, row in enumerate(instances):
            for j, value in enumerate(row):
                _check_number(value, lambda i=i, j=j: _instance_field(i, j, names))
        return pd.DataFrame(instances, columns=names, dtype=object)

    def _images(self, images: list[str] | None, pixels: list | None) -> pd.DataFrame:
        """One row per image, each decoded (or read from its numbers), reduced to the model's
        shape and dropped before the next."""
        shape = self.pipe.image_shape
        if shape is None:
            raise InputError("this model does not take images; send rows or instances")
        given = images if images is not None else pixels
        rows = np.empty((len(given), len(self.pipe.feature_names)))
        for i in range(len(given)):
            try:
                if images is not None:
                    rows[i] = self._image(i, images[i], shape)
                else:
                    rows[i] = inference.pixels_to_row(pixels[i], shape)
            except inference.ImageTooLarge as exc:
                raise TooLarge(str(exc)) from None
            except InputError as exc:
                text = str(exc)
                raise InputError(
                    text if text.startswith(f"image {i}") else f"image {i}: {text}"
                ) from None
            given[i] = None  # its bytes or numbers are not needed again
        return pd.DataFrame(rows, columns=self.pipe.feature_names)

    def _image(self, index: int, text: str, shape: tuple[int, int, int]) -> np.ndarray:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"image {index} is not valid base64") from None
        return inference.image_row(
            _io.BytesIO(raw), f"image {index}", shape,
            max_pixels=self.limits.max_image_pixels, formats=IMAGE_FORMATS,
        )  # fmt: skip

    def predict(self, frame: pd.DataFrame) -> dict[str, Any]:
        if self.onnx is not None:
            out = self.onnx.run(frame).astype(np.float64)
        else:
            out = np.asarray(self.pipe.predict_proba(frame))
        if self.pipe.task == "regression":
            return {"predictions": out.tolist()}
        classes = self.classes
        return {
            "predictions": [classes[i] for i in out.argmax(axis=1)],
            "probabilities": out.round(7).tolist(),
            "classes": classes,
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "model_dir": str(self.model_dir),
            "backend": self.backend,
            "version": self.version,
            "task": self.pipe.task,
            "served": self.served,
            "classes": self.classes,
            "feature_names": self.pipe.feature_names,
            "n_features": len(self.pipe.feature_names),
            "categorical": self.pipe.categorical,
            "accepts_images": self.pipe.is_image,
            "max_batch": self.limits.max_batch,
            "limits": asdict(self.limits),
            "metrics": self.metrics,
        }


def _instance_field(i: int, j: int, names: list[str]) -> str:
    return f"instances[{i}][{j}] (feature {names[j]!r})"


def _check_number(value: Any, field) -> None:
    """Refuse a number the model cannot take (``inference.number_problem``: NaN, infinity,
    beyond float32), naming the field (``field()``, built only then) and quoting an excerpt.
    JSON has no NaN: a missing value is null, which a model that imputes takes."""
    if inference.number_problem(value) is not None:
        _refuse_number(value, field(), value)


def _refuse_number(value: Any, field: str, number: Any) -> None:
    """The 422 for ``value`` as given (``number``: its numeric value, for numeric text)."""
    raise InputError(
        f"{field}: {excerpt(value)} is {inference.number_problem(number) or 'not finite'}; "
        "values must be finite numbers within float32's range (send null for a missing value "
        "where the model imputes)"
    )


class RequestError(InputError):
    """A body that is not JSON or not a batch's shape: pydantic's errors, each cut short."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))
        self.errors = errors


def short_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's (or FastAPI's) validation errors without echoing the input: each location
    part and the offending input cut to an excerpt, at most ``SHOWN_ERRORS`` of them."""
    out = []
    for error in errors[:SHOWN_ERRORS]:
        item: dict[str, Any] = {
            "loc": [p if isinstance(p, int) else excerpt(str(p), 40) for p in error.get("loc", ())],
            "msg": excerpt(str(error.get("msg", "")), 200).strip("'\""),
            "type": error.get("type"),
        }
        if "input" in error and error.get("type") != "json_invalid":
            item["input"] = excerpt(error["input"])
        out.append(item)
    if len(errors) > SHOWN_ERRORS:
        out.append({"msg": f"... and {len(errors) - SHOWN_ERRORS} more error(s)"})
    return out


def parse_request(body: bytes) -> PredictRequest:
    """The body as a ``PredictRequest`` (JSON parsed and validated in one pass by pydantic)."""
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise RequestError(short_errors(exc.errors(include_url=False))) from None


def _json(content: Any) -> bytes:
    return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 before it is read.

    A declared Content-Length over the limit is refused at once; otherwise the bytes are
    counted as they arrive (a chunked or lying client included) and the request is cut off the
    moment they pass the limit: the 413 goes out with ``Connection: close``, the app sees the
    client gone, and the rest of the body is never read.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length < 0 or length > self.max_bytes:
                return await self._refuse(send, length)
        received, refused, started = 0, False, False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(send, None)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if refused:
                return  # the 413 has gone out; the app's own answer is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, send, length: int | None) -> None:
        limit = f"{self.max_bytes / 1e6:g} MB"
        if length is None:
            detail = f"request body over the server's limit of {limit} (--max-body-mb)"
        elif length < 0:
            detail = "request has an invalid Content-Length"
        else:
            detail = (
                f"request body of {length / 1e6:.1f} MB is over the server's limit of {limit} "
                "(--max-body-mb)"
            )
        status = 400 if length is not None and length < 0 else 413
        content = _json({"detail": detail})
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                (b"connection", b"close"),
            ],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": content})


def find_metrics(model_dir: Path) -> dict[str, Any]:
    """The metrics the pipeline wrote for this model: models/NAME -> metrics/NAME/*.json."""
    model_dir = model_dir.resolve()
    for root in model_dir.parents:
        if (root / "dvc.yaml").is_file():
            break
    else:
        return {}
    try:
        rel = model_dir.relative_to(root)
    except ValueError:
        return {}
    if len(rel.parts) < 2 or rel.parts[0] != "models":
        return {}
    folder = root / "metrics" / Path(*rel.parts[1:])
    out = {}
    for name in ("eval", "export"):
        path = folder / f"{name}.json"
        if path.is_file():
            try:
                out[name] = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
    return out


def served_metrics(metrics: dict[str, Any], served: str) -> dict[str, Any]:
    """The metrics that describe the served model. eval.json's headline is the served model's
    (with ``accuracy_plain`` beside it when that is the test-time augmented network); an
    eval.json scored for another variant than this directory serves is left out, with a note,
    rather than shown as this model's numbers."""
    scores = metrics.get("eval")
    if not isinstance(scores, dict) or "accuracy" not in scores:
        return metrics
    scored = "tta" if "accuracy_plain" in scores else "plain"
    if scored == served:
        return metrics
    out = {k: v for k, v in metrics.items() if k != "eval"}
    out["note"] = (
        f"eval.json scores the {scored} network, this directory serves the {served} one: "
        "rerun the export stage (dvc repro)"
    )
    return out


def create_app(
    model_dir: str | Path,
    *,
    backend: Backend = "onnx",
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_mb: float = DEFAULT_MAX_BODY_MB,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    threads: int = 0,
):
    """The FastAPI app serving one model directory, within ``Limits``."""
    limits = Limits.of(max_batch, max_body_mb, max_image_pixels)
    predictor = Predictor(model_dir, backend, threads=threads, limits=limits)
    app = FastAPI(
        title="tandem",
        description="A tandem model: raw features in, predictions and probabilities out.",
        version=str(predictor.version["md5"]),
    )
    app.state.predictor = predictor
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    workers: list[anyio.CapacityLimiter] = []  # made on first use, inside the event loop

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError):
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": short_errors(list(exc.errors()))})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "backend": predictor.backend}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return predictor.metadata()

    schema = PredictRequest.model_json_schema()

    @app.post(
        "/predict",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
        },
    )
    async def predict(request: Request):
        """Read the body here (bounded by ``BodyLimit``), do everything else in a worker."""
        try:
            body = await request.body()
        except ClientDisconnect:  # gone, or cut off by BodyLimit: nobody reads this answer
            return Response(status_code=400)
        if not workers:
            workers.append(anyio.CapacityLimiter(CONCURRENT_BATCHES))
        status, content = await anyio.to_thread.run_sync(predictor.answer, body, limiter=workers[0])
        return Response(content=content, status_code=status, media_type="application/json")

    return app


def serve(
    model_dir: str | Path,
    *,
    backend: Backend = "onnx",
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_mb: float = DEFAULT_MAX_BODY_MB,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    threads: int = 0,
    log_level: str = "info",
) -> None:
    import uvicorn

    app = create_app(
        model_dir, backend=backend, max_batch=max_batch, max_body_mb=max_body_mb,
        max_image_pixels=max_image_pixels, threads=threads,
    )  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level=log_level)
