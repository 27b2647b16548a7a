"""fetch: an entry's source (OpenML, a CSV/parquet file, an image folder, a sklearn loader) ->
one parquet file + provenance JSON (source, content hashes, counts)."""

from stages.layout import layout
from tandem import console, data, io

# the OpenML cache folder is a machine setting: scikit-learn's SCIKIT_LEARN_DATA, not a param
PARAMS = ("datasets.{name}.data",)


def run(params, name: str) -> None:
    spec, paths = params.datasets[name].data, layout(name)
    with console.status(f"reading {name} ({spec.source})"):
        if spec.source == "openml":
            frame, provenance = data.fetch_openml_frame(spec.data_id, target=spec.target)
        elif spec.source == "file":
            frame, provenance = data.read_table_file(
                spec.path, target=spec.target, root=data.SOURCES
            )
        elif spec.source == "images":
            frame, provenance = data.read_image_folder(
                spec.path, shape=spec.image_shape, channels=spec.channels, target=spec.target,
                root=data.SOURCES,
            )  # fmt: skip
        else:
            frame, provenance = data.load_sklearn_frame(spec.name, target=spec.target)
    # rows at all, the target, infinities, numbers among text: named here, not three stages on
    frame = data.check_intake(frame, target=spec.target, task=spec.task, drop=spec.drop,
                              dtypes=spec.dtypes, source=f"datasets.{name}'s data")  # fmt: skip
    features = frame.shape[1] - 1 - len([c for c in spec.drop if c in frame.columns])
    if spec.modality == "image" and features != spec.n_pixels:
        raise data.DataError(
            f"datasets.{name}: {features} feature columns, but image_shape "
            f"{list(spec.image_shape)} x {spec.channels} channel(s) needs {spec.n_pixels}"
        )
    io.write_parquet(paths.raw, frame)
    io.write_json(paths.provenance, provenance)
