"""``tandem serve``: the trained pipeline behind a small FastAPI app.

``POST /predict`` takes a batch as JSON, in one of three shapes:

- ``{"rows": [{"column": value, ...}, ...]}``: named raw columns (any model);
- ``{"instances": [[v1, v2, ...], ...]}``: values in the order of ``/metadata``'s feature names;
- ``{"images": ["<base64 PNG>", ...]}`` or ``{"pixels": [[[H rows of W values]], ...]}``:
  images, for an image model (USPS: 16x16), scaled exactly like ``tandem predict`` scales PNGs.

Every malformed request gets a 4xx answer that says what is wrong (422: wrong feature count,
missing column, NaN/infinity, not a number, bad image; 413: batch larger than ``max_batch``);
a 5xx would be a bug. ``GET /health`` and ``GET /metadata`` (model version = the artifact's DVC
hash, what is served, classes, feature names, metrics) describe the service. The model runs in
onnxruntime from ``model.onnx`` or in torch from the saved estimator (``backend``); both load
without pickle and serve the same model, the one eval.json's headline scores: test-time
augmentation where the entry's ``evaluate.tta`` is on, classes named by ``evaluate.label_names``
in natural order (``tandem.inference.Serving``).
"""

from __future__ import annotations

import base64
import binascii
import io as _io
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tandem import inference
from tandem.export import OnnxModel
from tandem.inference import InputError, Pipeline

Backend = Literal["onnx", "torch"]
DEFAULT_MAX_BATCH = 1024
Value = float | int | str | bool | None


class PredictRequest(BaseModel):
    """One batch; exactly one of the fields is given."""

    model_config = ConfigDict(extra="forbid")
    rows: list[dict[str, Value]] | None = Field(default=None, description="named raw columns")
    instances: list[list[Value]] | None = Field(
        default=None, description="values in the order of /metadata's feature_names"
    )
    images: list[str] | None = Field(default=None, description="base64-encoded PNG digits")
    pixels: list[list[list[float]]] | list[list[list[list[float]]]] | None = Field(
        default=None,
        description="grey images of the model's height x width (any range, either polarity)",
    )


class Predictor:
    """The loaded model plus everything the endpoints need to check and run a batch."""

    def __init__(self, model_dir: str | Path, backend: Backend = "onnx", *, threads: int = 0):
        self.model_dir = Path(model_dir)
        self.backend = backend
        self.pipe: Pipeline = inference.load(self.model_dir)
        if backend == "onnx":
            self.onnx: OnnxModel | None = OnnxModel(
                self.model_dir / inference.ONNX_FILE, threads=threads or None
            )
            artifact = self.model_dir / inference.ONNX_FILE
        elif backend == "torch":
            self.onnx = None
            artifact = self.model_dir / inference.MODEL
            if threads:
                import torch

                torch.set_num_threads(threads)
        else:
            raise ValueError(f"backend must be 'onnx' or 'torch'; got {backend!r}")
        md5, source = inference.dvc_md5(artifact)
        self.version = {"artifact": str(artifact), "md5": md5, "source": source}
        if self.onnx is not None:  # the file says what it serves
            self.served, self.classes = self.onnx.served, self.onnx.classes
        else:
            self.served, self.classes = self.pipe.serving.served, self.pipe.classes
        self.metrics = served_metrics(find_metrics(self.model_dir), self.served)

    # ------------------------------------------------------------------ batches
    def frame(self, request: PredictRequest) -> pd.DataFrame:
        """The request as a frame of raw columns, or an InputError that says what is wrong."""
        given = [
            name for name in ("rows", "instances", "images", "pixels")
            if getattr(request, name) is not None
        ]  # fmt: skip
        if len(given) != 1:
            raise InputError(
                f"give exactly one of rows, instances, images, pixels; got {given or 'none'}"
            )
        names = self.pipe.feature_names
        if request.rows is not None:
            _check_values((v for row in request.rows for v in row.values()), self.pipe)
            frame = pd.DataFrame.from_records(request.rows)
        elif request.instances is not None:
            for i, row in enumerate(request.instances):
                if len(row) != len(names):
                    raise InputError(
                        f"instance {i} has {len(row)} values; the model takes {len(names)} "
                        f"features (see /metadata)"
                    )
            _check_values((v for row in request.instances for v in row), self.pipe)
            if self.pipe.by_columns:
                frame = pd.DataFrame(request.instances, columns=names, dtype=object)
            else:
                return self._matrix(request.instances)
        elif request.images is not None:
            frame = self._images([_decode_png(i, s) for i, s in enumerate(request.images)])
        else:
            frame = self._images(request.pixels, pixels=True)
        if len(frame) == 0:
            raise InputError("the batch is empty")
        return inference.prepare_frame(frame, self.pipe)

    def _matrix(self, values: list[list[Value]]) -> pd.DataFrame:
        """Numbers-only models: one float array, checked at once (fast path)."""
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("every value must be a number for this model") from None
        if array.size == 0:
            raise InputError("the batch is empty")
        if not np.isfinite(array).all():
            raise InputError("values must be finite numbers (no null, NaN or infinity)")
        return pd.DataFrame(array, columns=self.pipe.feature_names)

    def _images(self, images: list, pixels: bool = False) -> pd.DataFrame:
        shape = self.pipe.image_shape
        if shape is None:
            raise InputError("this model does not take images; send rows or instances")
        channels, height, width = shape
        rows = []
        for i, image in enumerate(images):
            try:
                if pixels:
                    grid = np.asarray(image, dtype=np.float64)
                    want = (height, width) if channels == 1 else (channels, height, width)
                    if grid.shape != want or not np.isfinite(grid).all():
                        raise InputError(
                            f"must be {' x '.join(map(str, want))} finite numbers, got {grid.shape}"
                        )
                    rows.append(inference.scale_image(grid))
                else:
                    rows.append(inference.image_to_row(image, shape))
            except InputError as exc:
                raise InputError(f"image {i}: {exc}") from None
        if not rows:
            return pd.DataFrame(columns=self.pipe.feature_names)
        return pd.DataFrame(np.vstack(rows), columns=self.pipe.feature_names)

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

    def metadata(self, max_batch: int) -> dict[str, Any]:
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
            "max_batch": max_batch,
            "metrics": self.metrics,
        }


def _check_values(values, pipe: Pipeline) -> None:
    """Refuse NaN/infinity anywhere (JSON has no NaN: a missing value is null)."""
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError("values must be finite numbers: NaN and infinity are refused "
                             "(send null for a missing value where the model imputes)")  # fmt: skip


def _decode_png(index: int, text: str):
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(text, validate=True)
        image = Image.open(_io.BytesIO(raw))
        image.load()
        return image
    except (binascii.Error, ValueError):
        raise InputError(f"image {index} is not valid base64") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"image {index} is not a readable image ({exc})") from None


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
            except json.JSONDecodeError:
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
    threads: int = 0,
):
    """The FastAPI app serving one model directory."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    predictor = Predictor(model_dir, backend, threads=threads)
    app = FastAPI(
        title="tandem",
        description="A tandem model: raw features in, predictions and probabilities out.",
        version=str(predictor.version["md5"]),
    )
    app.state.predictor = predictor

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError):
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "backend": predictor.backend}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        return predictor.metadata(max_batch)

    @app.post("/predict")
    def predict(request: PredictRequest):
        size = max(
            len(getattr(request, name) or [])
            for name in ("rows", "instances", "images", "pixels")
        )  # fmt: skip
        if size > max_batch:
            return JSONResponse(
                status_code=413,
                content={"detail": f"batch of {size} rows is larger than max_batch={max_batch}"},
            )
        return predictor.predict(predictor.frame(request))

    return app


def serve(
    model_dir: str | Path,
    *,
    backend: Backend = "onnx",
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = DEFAULT_MAX_BATCH,
    threads: int = 0,
    log_level: str = "info",
) -> None:
    import uvicorn

    app = create_app(model_dir, backend=backend, max_batch=max_batch, threads=threads)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
