"""The live overlay viewer: napari attached to a run's overlay bus (``livescope view``).

The viewer subscribes with "latest wins" (`OverlaySubscriber`) and redraws on a
Qt timer, as fast as napari can draw; the acquisition and the analysis never
wait for it. Layers are made once and then updated in place (``.data``), so a
user's changes to them (contrast, colormap, visibility, opacity) stay; a hidden
tails, cells or decisions layer is brought up to date when shown again. Frames
taken at another binning than the segmented one are scaled onto its pixels.

napari (the ``viewer`` extra) is imported only inside the functions that need it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livescope.bus import OverlayMessage, OverlaySubscriber
from livescope.schema import LivescopeError, load_profile

__all__ = ["OverlayViewer"]

logger = logging.getLogger("livescope")

# bottom to top: label-free, fluorescence, virtual stain, contours, tails, cells, decisions
_RANK = {"label_free": 0, "fluorescence": 1, "stain": 2, "labels": 3, "tails": 4, "cells": 5,
         "decisions": 6}  # fmt: skip
_LABEL_FREE_WORDS = {"phase", "brightfield", "bright", "bf", "dic", "pc", "trans", "transmitted",
                     "transmission", "tl", "labelfree", "oblique", "qpi", "ph", "phc",
                     "hoffman", "darkfield"}  # fmt: skip
# (Nikon's phase rings Ph0..Ph3 and names like "Phase2": a word with a number after it)
_LABEL_FREE_NUMBERED = re.compile(r"(ph|phase|phc|bf|dic|tl)\d+")
_FLUORESCENCE_COLORMAPS = (  # (looked up in order: "irfp" is far-red before "rfp" is red)
    (("dapi", "hoechst", "bfp", "405"), "blue"),
    (("gfp", "fitc", "yfp", "488", "venus"), "green"),
    (("cy5", "640", "647", "farred", "irfp"), "red"),
    (("rfp", "mcherry", "tritc", "cy3", "561", "tdtomato", "dsred"), "magenta"),
)
_MITOTIC = {"prophase", "metaphase", "anaphase", "telophase", "mitosis", "mitotic"}
_ACCEPTED = (0.2, 1.0, 0.2, 1.0)
_REJECTED = (1.0, 0.15, 0.15, 1.0)
_UNTRACKED = (0.7, 0.7, 0.7, 1.0)  # a nucleus no cell names (napari's colormaps need one)


def channel_is_label_free(channel: str, kinds: Mapping[str, str] | None = None) -> bool:
    """Say whether a channel is label-free (phase, brightfield, DIC...).

    ``kinds`` maps channel names to their kind in the run's hardware profile
    (``label_free`` or ``fluorescence``, `run_channel_kinds`): a channel in it is
    what the profile says, as the pipeline takes it. Another is guessed from its
    name (Phase, Ph2, BF, TL, Transmission, DIC...).
    """
    if kinds is not None and channel in kinds:
        return kinds[channel] == "label_free"
    # ("label free", "Label-free", "label_free" are one word; "label" alone is not: a
    # "nuclear label" is fluorescence)
    name = re.sub(r"label[^a-z0-9]*free", "labelfree", channel.lower())
    words = {w for w in re.split(r"[^a-z0-9]+", name) if w}
    if any(_LABEL_FREE_NUMBERED.fullmatch(w) for w in words):
        return True
    return bool(words & _LABEL_FREE_WORDS) or "labelfree" in name


def run_channel_kinds(source: str | Path) -> dict[str, str]:
    """Return each channel's kind (``label_free``, ``fluorescence``) in a run's hardware profile.

    ``source`` is what the viewer attaches to: a run folder, its ``overlay.json``
    or an endpoint. The profile is the run folder's ``profile.yaml``, the one the
    pipeline decides by; an endpoint, a run without one, or one that cannot be
    read gives none (the channels' kinds are then guessed from their names).
    """
    if isinstance(source, str) and "://" in source:
        return {}
    path = Path(source)
    run_dir = path.parent if path.suffix == ".json" and not path.is_dir() else path
    profile = run_dir / "profile.yaml"
    if not profile.is_file():
        return {}
    try:
        presets = load_profile(profile).channels.presets
    except (LivescopeError, OSError, ValueError) as exc:
        logger.warning(
            "overlay viewer: %s cannot be read (%s): channels are told label-free by their names",
            profile, exc,
        )  # fmt: skip
        return {}
    return {c.name: c.kind for c in presets}


def channel_colormap(channel: str, index: int = 0) -> str:
    """Return a napari colormap for a fluorescence channel, from its name (DAPI: blue...)."""
    name = channel.lower().replace("-", "").replace(" ", "")
    for keys, colormap in _FLUORESCENCE_COLORMAPS:
        if any(k in name for k in keys):
            return colormap
    return ("green", "magenta", "cyan", "yellow")[index % 4]


def track_colors(tracks: NDArray[Any]) -> NDArray[np.float32]:
    """One stable, well-spread RGBA colour per track id (golden-ratio hues)."""
    hue = (np.asarray(tracks, dtype=np.float64).ravel() * 0.618033988749895) % 1.0
    sat, val = 0.7, 1.0
    rgba = np.ones((hue.size, 4), dtype=np.float32)
    for i, n in enumerate((5.0, 3.0, 1.0)):  # HSV to RGB, one channel at a time
        k = (n + hue * 6.0) % 6.0
        rgba[:, i] = val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgba


def _cell_color(state: object, p_mitosis: object) -> tuple[float, float, float, float]:
    name = state.lower() if isinstance(state, str) else ""
    if name in _MITOTIC or (not name and isinstance(p_mitosis, float) and p_mitosis >= 0.5):
        return (1.0, 0.2, 1.0, 1.0)
    if name.startswith("apopto"):
        return (1.0, 0.3, 0.1, 1.0)
    return (1.0, 1.0, 0.2, 1.0)


def _field_array(name: str) -> bool:
    """Whether an overlay array is one of a field's images (camera frame, stain, labels)."""
    return name.startswith("raw:") or name in ("stain", "labels")


def _binning_scale(grid: tuple[int, ...], shape: tuple[int, ...]) -> tuple[float, ...] | None:
    """Return the scale that lays a frame of ``shape`` over the ``grid`` of the labels.

    None unless one is a binning of the other, side by side (2x, 3x..., within 1 %: a
    sensor side that the binning does not divide): a cropped ROI cannot be placed.
    The scale is the whole binning factor (or its inverse): a camera drops the
    sensor's pixels that do not fill a binned one, so a binned pixel always spans
    ``factor`` pixels (512 at 3x gives 170 binned pixels of 3, not of 512/170).
    """
    scale = []
    for g, n in zip(grid, shape, strict=True):
        factor = max(g, n) / min(g, n)
        if abs(factor - round(factor)) > 0.01 * factor:
            return None
        whole = float(round(factor))
        scale.append(whole if g >= n else 1.0 / whole)
    return tuple(scale)


def _labels_grid(
    arrays: dict[str, NDArray[Any]], kinds: Mapping[str, str] | None = None
) -> tuple[int, ...] | None:
    """Return the pixel grid of a field's labels, cells and tails (the segmented frame's).

    The labels' shape, else the first fluorescence frame's (the one segmented; the
    channels' ``kinds`` as in `channel_is_label_free`), else the first image's;
    None if the field has none.
    """
    planes = [(k, a.shape) for k, a in arrays.items() if _field_array(k) and a.ndim == 2]
    for key, shape in planes:
        if key == "labels":
            return shape
    for key, shape in planes:
        if key.startswith("raw:") and not channel_is_label_free(key[4:], kinds):
            return shape
    if planes:
        return planes[0][1]
    return next((a.shape for k, a in arrays.items() if _field_array(k) and a.ndim > 2), None)


def _widen_contrast_range(layer: Any, data: NDArray[Any], limits_too: bool = False) -> None:
    """Widen an image layer's contrast range to take in a frame outside it.

    napari sets the range (the slider's ends) from the layer's first frame and keeps
    it: a dim first frame (a position out of focus, the lamp still off) left every
    brighter frame saturated, beyond the slider's reach. The limits are widened
    too if ``limits_too`` (limits napari chose, not the user: theirs stay).
    """
    lo, hi = layer.contrast_limits_range
    least, most = float(np.min(data)), float(np.max(data))
    if not (math.isfinite(least) and math.isfinite(most)):  # a stain's NaN or inf pixels
        finite = data[np.isfinite(data)]
        if not finite.size:
            return
        least, most = float(finite.min()), float(finite.max())
    if least < lo or most > hi:
        layer.contrast_limits_range = (min(lo, least), max(hi, most))
    low, high = layer.contrast_limits
    if limits_too and (least < low or most > high):
        layer.contrast_limits = (min(low, least), max(high, most))


def _field_decisions(decisions: object) -> str:
    """Say the decisions fired on a whole field (no place to mark), e.g. ``crowded (accepted)``.

    The header's ``field_decisions`` is not checked by the decoder: odd items are left out.
    """
    said = []
    for d in decisions if isinstance(decisions, list) else []:
        if not isinstance(d, dict) or not isinstance(rule := d.get("rule"), str):
            continue
        verdict = "accepted" if d.get("accepted") is True else "rejected"
        reason = d.get("reason")
        said_why = isinstance(reason, str) and reason and verdict == "rejected"
        why = f": {reason:.80}" if said_why else ""
        said.append(f"{rule:.40} ({verdict}{why})")
    return ", ".join(said[:5]) + (f", ... ({len(said)} in all)" if len(said) > 5 else "")


class OverlayViewer:
    """napari showing the newest analysis results of one position of a running run.

    Parameters
    ----------
    source
        A run folder (its ``overlay.json`` is waited for up to ``timeout_s``) or
        an overlay endpoint.
    position
        The position to show; default: the first one that arrives.
    viewer
        A `napari.Viewer` to draw into; default: a new one.
    timeout_s
        How long to wait for ``overlay.json``, in seconds.

    Raises
    ------
    ImportError
        if napari is not installed (the ``viewer`` extra: `livescope.schema.install_command`).
    LivescopeError
        if no overlay appears in time or it cannot be attached.

    Notes
    -----
    Create, `refresh`, `start` and `close` on the Qt (main) thread. Messages
    are received on the subscriber's own thread. PageDown and PageUp show the
    next and the previous position.

    """

    def __init__(
        self,
        source: str | Path,
        *,
        position: str | None = None,
        viewer: Any | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        import napari  # the `viewer` extra; never at module level

        self.subscriber = OverlaySubscriber(source, timeout_s=timeout_s)
        self._source = source
        self._kinds: dict[str, str] | None = None  # the run's channels' kinds, read at first draw
        self._owns_viewer = viewer is None
        try:
            self.viewer: Any = viewer if viewer is not None else napari.Viewer(title="livescope")
        except BaseException:
            self.subscriber.close()
            raise
        self.position = position
        self.subscriber.pinned = position
        self.frames_shown = 0
        self.refresh_errors = 0
        self._shown: OverlayMessage | None = None
        self._drawn: str | None = None  # the position whose field the layers show
        self._shape: tuple[int, ...] | None = None  # the frames' shape of the field drawn last
        self._layers: dict[str, Any] = {}
        self._unshown: dict[str, Any] = {}  # the points a hidden layer has yet to show
        self._ranks: dict[str, int] = {}
        self._auto_limits: dict[str, tuple[float, ...]] = {}  # an image's limits not the user's
        self._label_colormap: Any = None  # the labels layer's colormap set last, by us
        self._label_tracks: dict[int, int] = {}  # the label -> track it was set from
        self._timer: Any = None
        self._caption = ""  # the shown field's line in the text overlay
        self._said = ""  # the text overlay's last text, logged once
        self._said_key = ""  # ... and its words without their numbers, as last logged
        self._keys: dict[str, Any] = {}  # the key bindings made here: undone by `close`
        self._bind_keys()

    # ------------------------------------------------------------ positions

    def positions(self) -> list[str]:
        """Positions that have sent results so far."""
        return self.subscriber.positions()

    def show_position(self, position: str) -> None:
        """Show ``position`` from the next `refresh` on."""
        self.position = position
        self.subscriber.pinned = position
        self._shown = None

    def next_position(self) -> str | None:
        """Switch to the next position seen (wrapping around); returns it."""
        return self._step_position(1)

    def previous_position(self) -> str | None:
        """Switch to the previous position seen (wrapping around); returns it."""
        return self._step_position(-1)

    def _step_position(self, step: int) -> str | None:
        seen = self.positions()
        if not seen:
            return None
        i = seen.index(self.position) + step if self.position in seen else 0
        self.show_position(seen[i % len(seen)])
        return self.position

    def _bind_keys(self) -> None:
        """Bind PageDown and PageUp to the next and previous position (Qt thread).

        Only ``--position`` chose what ``livescope view`` showed: watching another
        of a plate's positions took closing the viewer and starting it again. A
        key the user's own viewer has bound stays theirs.
        """
        for key, step in (("PageDown", 1), ("PageUp", -1)):

            def switch(_viewer: Any, step: int = step) -> None:
                self._step_position(step)
                self._tick()  # (drawn now, not at the next tick)

            try:
                self.viewer.bind_key(key, switch)
            except ValueError:  # already bound
                logger.debug("overlay viewer: %s is bound already; left as it is", key)
                continue
            self._keys[key] = switch

    # ------------------------------------------------------------ drawing

    def refresh(self) -> bool:
        """Draw the newest message of the shown position; returns False if nothing was new."""
        if self.position is None:
            seen = self.positions()
            if not seen:
                self._say(f"waiting for the first results of run {self.subscriber.run_id}")
                return False
            self.show_position(seen[0])
        msg = self.subscriber.latest(self.position)
        if msg is None:
            if self._drawn not in (None, self.position):
                self._clear()  # (another position's field would pass for this one's)
            self._waiting()
            return False
        if msg is self._shown:
            self._say(self._caption)
            return False
        self._shown = msg  # (before drawing: a message napari cannot draw is not retried)
        self._draw(msg)
        self.frames_shown += 1
        return True

    def _waiting(self) -> None:
        """Say which position the viewer waits for when others have sent results."""
        seen = self.positions()
        if self.subscriber.was_let_go(str(self.position)):
            text = (
                f"waiting for the next results of position {self.position!r} (its last ones "
                "were let go: other positions' newer ones filled the viewer's memory)"
            )
        else:
            names = ", ".join(seen[:10]) + (f", ... ({len(seen)} in all)" if len(seen) > 10 else "")
            text = f"waiting for position {self.position!r} (seen so far: {names})"
        self._say(text)

    def _say(self, text: str) -> None:
        """Show ``text`` in the text overlay, with why no worker publishes, if that is so."""
        problem = self.subscriber.link_problem()
        if problem is not None:
            text = f"{text}\n{problem}" if text else problem
        # (said once, with the problem if there is one; a new field's own line is no news)
        # (by its words, not its counts: a count of messages refused, which grows with each,
        # logged the warning at the refresh rate)
        key = re.sub(r"\d+", "#", text)
        if text != self._caption and text != self._said and key != self._said_key:
            logger.warning("overlay viewer: %s", text.replace("\n", ": "))
            self._said_key = key
        self._said = text
        overlay = self.viewer.text_overlay
        if text and overlay.text != text:
            overlay.text = text
            overlay.visible = True

    def _blank_arrays(
        self, keep: Collection[str] = (), shape: tuple[int, ...] | None = None
    ) -> None:
        """Empty our layers of a field's arrays (frames, stain, labels) but those in ``keep``."""
        for key in self._layers:
            if key not in keep and _field_array(key):
                self._blank(key, shape)

    def _clear(self) -> None:
        """Empty every layer of ours (none of them shows the shown position's field)."""
        self._blank_arrays()
        self._tails({})
        self._cells([])
        self._decisions([])
        self._drawn = None

    def _draw(self, msg: OverlayMessage) -> None:
        h = msg.header
        self._drawn = msg.position
        # (the wire allows 1-D arrays, napari draws images of 2-D or more: one of them
        # raised in add_image, and the whole field went undrawn, a traceback in the log)
        arrays = {k: a for k, a in msg.arrays.items() if a.ndim >= 2 or not _field_array(k)}
        flat = [k for k in msg.arrays if k not in arrays]
        if self._kinds is None:  # (once results arrive, the run's profile.yaml is written)
            self._kinds = run_channel_kinds(self._source)
        kinds = self._kinds
        shape = _labels_grid(arrays, kinds)
        # (a field without them: a stain skipped; emptied in this field's shape, so that
        # the old one's extent does not stay: napari's home view, the scale bar)
        self._blank_arrays(keep=arrays, shape=shape)
        for name, arr in arrays.items():
            if not name.startswith("raw:"):
                continue
            channel = name[4:]
            if channel_is_label_free(channel, kinds):
                self._image(name, arr, "label_free", colormap="gray", blending="translucent")
            else:
                # (the fluorescence layers made so far: a channel taken only every few
                # frames, or at one position, gets a colour of its own, not the first's)
                made = sum(r == _RANK["fluorescence"] for r in self._ranks.values())
                cmap = channel_colormap(channel, made)
                self._image(name, arr, "fluorescence", colormap=cmap, blending="additive")
        if "stain" in arrays:
            stain = np.asarray(arrays["stain"], dtype=np.float32)  # GL has no float16 here
            self._image("stain", stain, "stain", colormap="cyan", blending="additive")
        if "labels" in arrays:
            self._labels(arrays["labels"], h.get("cells") or [])
        unplaced = self._fit_to_labels(arrays, shape)
        if shape is not None and shape != self._shape:
            if self._shape is not None:  # another ROI or binning: the old view shows little
                self.viewer.reset_view()
            self._shape = shape
        self._tails(h.get("tails") or {})
        self._cells(h.get("cells") or [])
        self._decisions(h.get("decisions") or [])
        when = h.get("sample_time_s")
        clock = f" · {when / 60:.1f} min" if isinstance(when, int | float) else ""
        self._caption = f"{h['run_id']} · {h['position']} · t={h['t']}{clock} · frame {h['seq']}"
        if fired := _field_decisions(h.get("field_decisions")):
            self._caption += f"\nfired on the whole field: {fired}"
        if flat:
            names = ", ".join(f"{k:.40}" for k in flat[:5])
            self._caption += f"\nnot drawn (1-D, not an image): {names}"
        if unplaced:
            self._caption += f"\nnot laid over the labels (another ROI, not a binning): {unplaced}"
        self._say(self._caption)

    def _fit_to_labels(self, arrays: dict[str, NDArray[Any]], grid: tuple[int, ...] | None) -> str:
        """Scale the field's 2-D images onto the labels' pixel ``grid``; say those that cannot be.

        Channels may be taken at another binning (a fluorescence channel binned 2x
        to spare the sample light): the labels, cells, tails and decisions are in
        the pixels of the segmented frame, and a phase frame of twice its size was
        drawn with only its top-left quarter under them.
        """
        unplaced = []
        for key, arr in arrays.items():
            layer = self._live(key)
            if not _field_array(key) or arr.ndim != 2 or layer is None:
                continue
            scale = _binning_scale(grid, arr.shape) if grid and len(grid) == 2 else (1.0, 1.0)
            if scale is None:
                unplaced.append(f"{key:.40} {arr.shape[0]}x{arr.shape[1]}")
                scale = (1.0, 1.0)
            # (pixel centres: a binned pixel's centre is the middle of the pixels it bins)
            translate = tuple((s - 1) / 2 for s in scale)
            if tuple(layer.scale) != scale or tuple(layer.translate) != translate:
                layer.scale, layer.translate = scale, translate
        return ", ".join(unplaced[:5])

    def _live(self, key: str) -> Any | None:
        """Return the layer made for ``key``, or None if not made yet or removed by the user."""
        layer = self._layers.get(key)
        if layer is not None and layer not in self.viewer.layers:
            return None
        return layer

    def _place(self, key: str, layer: Any, rank: int) -> None:
        """Move a new layer (appended on top) below the first of ours that ranks higher."""
        self._layers[key] = layer
        self._ranks[key] = rank
        layers = self.viewer.layers
        above = [
            layers.index(other)
            for k, other in self._layers.items()
            if k != key and other in layers and self._ranks[k] > rank
        ]
        if above:
            layers.move(layers.index(layer), min(above))

    def _blank(self, key: str, shape: tuple[int, ...] | None = None) -> None:
        """Empty a layer of ours that the shown field lacks (never left from an older one).

        A 2-D layer takes ``shape``, the shown field's frames' shape, if given.
        """
        layer = self._live(key)
        if layer is None:
            return
        data = np.asarray(layer.data)
        if shape is not None and data.ndim == 2 == len(shape) and data.shape != shape:
            layer.data = np.zeros(shape, data.dtype)
            layer.scale, layer.translate = (1.0, 1.0), (0.0, 0.0)  # (on the labels' grid)
        elif np.any(data):
            layer.data = np.zeros_like(data)

    def _image(self, key: str, data: NDArray[Any], kind: str, **style: Any) -> None:
        layer = self._live(key)
        if layer is not None:
            changed = np.asarray(layer.data).dtype != data.dtype
            # (limits still those napari chose from a first frame follow brighter ones: a
            # dark first frame, the shutter still closed, gave 0..1, and every frame after
            # it was drawn as a white mask until the user found the contrast slider)
            chosen = self._auto_limits.get(key) == tuple(layer.contrast_limits)
            layer.data = data
            if changed:  # another camera mode: the user's contrast was for the old range
                layer.reset_contrast_limits_range()
                layer.reset_contrast_limits()
            else:
                _widen_contrast_range(layer, data, limits_too=chosen)
            if not (changed or chosen):
                return
        elif key not in self._layers:
            layer = self.viewer.add_image(data, name=key, **style)
            self._place(key, layer, _RANK[kind])
        else:
            return
        self._auto_limits[key] = tuple(layer.contrast_limits)

    def _labels(self, labels: NDArray[Any], cells: Sequence[dict[str, Any]]) -> None:
        if labels.dtype.kind not in "iu":  # napari draws integer labels only
            labels = np.nan_to_num(labels).astype(np.int32)
        layer = self._live("labels")
        if layer is not None:
            layer.data = labels
        elif "labels" not in self._layers:
            layer = self.viewer.add_labels(labels, name="labels", opacity=1.0)
            layer.contour = 1  # outlines only: the frame stays visible inside each nucleus
            self._place("labels", layer, _RANK["labels"])
        else:
            return
        self._track_colors(layer, cells)

    def _track_colors(self, layer: Any, cells: Sequence[dict[str, Any]]) -> None:
        """Draw each nucleus's outline in its track's colour, its tail's, frame after frame.

        The segmenter numbers a field's nuclei anew in each frame: coloured by label
        value, as napari does, a cell's outline changed colour from frame to frame
        and two cells swapped theirs. A colormap the user chose (shuffled) stays.
        """
        if self._label_colormap is not None and layer.colormap is not self._label_colormap:
            return  # the user's
        tracks = {int(c["label"]): int(c["track"]) for c in cells if c["label"]}
        if tracks == self._label_tracks and self._label_colormap is not None:
            return  # (napari maps every pixel again on a new colormap)
        from napari.utils.colormaps import DirectLabelColormap

        colors = track_colors(np.fromiter(tracks.values(), np.int64, len(tracks)))
        color_dict: dict[int | None, Any] = {None: _UNTRACKED, 0: (0.0, 0.0, 0.0, 0.0)}
        color_dict.update(zip(tracks, colors.tolist(), strict=True))
        layer.colormap = DirectLabelColormap(
            color_dict=color_dict,
            use_selection=layer.show_selected_label,  # (the user's "show selected")
            selection=layer.selected_label,
        )
        self._label_colormap = layer.colormap  # (napari's own when no cell has a track)
        self._label_tracks = tracks

    def _tails(self, tails: dict[str, Sequence[Sequence[float]]]) -> None:
        """Draw each track's tail, a path in the track's colour.

        Not redrawn while the layer is hidden: napari triangulates every path in
        Python, on the Qt thread (about 140 ms a field for 100 tracks, 400 ms for
        300); hiding the tails makes a crowded field's viewer quick again.
        """
        layer = self._live("tails")
        if layer is None:
            if "tails" in self._layers:
                return
            layer = self.viewer.add_shapes(
                None, shape_type="path", edge_width=1.5, face_color="transparent", name="tails"
            )
            self._place("tails", layer, _RANK["tails"])
            layer.events.visible.connect(lambda: self._shown_again("tails"))
        elif self._hidden("tails", layer, tails):
            return
        paths = [
            (int(track), np.asarray(points, dtype=np.float64))
            for track, points in tails.items()
            if len(points) >= 2
        ]
        data = [(p, "path") for _, p in paths]
        layer.data = data
        if data:
            layer.edge_color = track_colors(np.array([t for t, _ in paths]))
            # (napari gives new paths a width of 1, not the layer's: the user's width)
            layer.edge_width = [float(layer.current_edge_width)] * len(data)

    def _cells(self, cells: Sequence[dict[str, Any]]) -> None:
        yx = np.array([[c["y"], c["x"]] for c in cells], dtype=np.float64).reshape(-1, 2)
        features = {
            "track": np.array([c["track"] for c in cells], dtype=np.int64),
            "label": np.array([c["label"] for c in cells], dtype=np.int64),
            "state": np.array([c.get("state") or "" for c in cells], dtype=object),
            "p_mitosis": np.array(
                [np.nan if c.get("p_mitosis") is None else c["p_mitosis"] for c in cells],
                dtype=np.float64,
            ),
        }
        colors = np.array(
            [_cell_color(c.get("state"), c.get("p_mitosis")) for c in cells], dtype=np.float32
        ).reshape(-1, 4)
        layer = self._live("cells")
        if layer is None:
            if "cells" in self._layers:
                return
            layer = self.viewer.add_points(
                yx,
                name="cells",
                size=3,
                border_width=0,
                features=features,
                text={"string": "{track}", "size": 8, "color": "white", "anchor": "upper_left"},
            )
            self._place("cells", layer, _RANK["cells"])
            layer.events.visible.connect(lambda: self._shown_again("cells"))
        elif self._hidden("cells", layer, cells):
            return
        else:
            layer.data = yx
            layer.features = features
        if len(cells):
            layer.face_color = colors

    def _decisions(self, decisions: Sequence[dict[str, Any]]) -> None:
        yx = np.array([[d["y"], d["x"]] for d in decisions], dtype=np.float64).reshape(-1, 2)
        features = {
            "rule": np.array([d["rule"] for d in decisions], dtype=object),
            "accepted": np.array([d["accepted"] for d in decisions], dtype=bool),
            "reason": np.array([d["reason"] for d in decisions], dtype=object),
        }
        colors = np.array(
            [_ACCEPTED if d["accepted"] else _REJECTED for d in decisions], dtype=np.float32
        ).reshape(-1, 4)
        layer = self._live("decisions")
        if layer is None:
            if "decisions" in self._layers:
                return
            layer = self.viewer.add_points(
                yx, name="decisions", symbol="star", size=14, border_width=0, features=features
            )
            self._place("decisions", layer, _RANK["decisions"])
            layer.events.visible.connect(lambda: self._shown_again("decisions"))
        elif self._hidden("decisions", layer, decisions):
            return
        else:
            layer.data = yx
            layer.features = features
        if len(decisions):
            layer.face_color = colors

    def _hidden(self, key: str, layer: Any, items: Any) -> bool:
        """Keep a field's ``items`` for when its hidden layer is shown again; say if hidden.

        napari slices no hidden layer: a field's cells or decisions set into one
        were drawn at the points of the last field it showed, and raised
        (IndexError) when a field had fewer; the rest of the field and its caption
        went undrawn. Hidden tails wait too: they cost the most to draw.
        """
        if layer.visible:
            self._unshown.pop(key, None)
            return False
        self._unshown[key] = items
        return True

    def _shown_again(self, key: str) -> None:
        """Draw the field's points a layer missed while hidden (its visible event, Qt thread)."""
        items = self._unshown.pop(key, None)
        if items is None:
            return
        if key == "tails":
            self._tails(items)
        elif key == "cells":
            self._cells(items)
        else:
            self._decisions(items)

    # ------------------------------------------------------------ live updates

    def _tick(self) -> None:
        try:
            self.refresh()
        except Exception:
            # the outermost loop of the viewer: log, count, keep showing what arrives next
            self.refresh_errors += 1
            logger.exception("overlay viewer: a refresh failed (%d so far)", self.refresh_errors)

    def start(self, interval_ms: int = 100) -> None:
        """Refresh every ``interval_ms`` on a Qt timer (call on the Qt thread).

        A refresh that takes longer than the interval delays the next tick (Qt
        does not queue timeouts), so the viewer runs at the rate napari can draw.
        """
        if not 1 <= interval_ms <= 2**31 - 1:  # (also NaN)
            raise ValueError(f"interval_ms must be 1 to {2**31 - 1} ms, got {interval_ms!r}")
        from qtpy.QtCore import QTimer

        self.stop()
        timer = QTimer()
        timer.setInterval(int(interval_ms))
        timer.timeout.connect(self._tick)
        timer.start()
        self._timer = timer

    def stop(self) -> None:
        """Stop the timer of `start` (the layers keep what they show)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def stats(self) -> dict[str, Any]:
        """Return the subscriber's counters, ``position``, ``frames_shown``, ``refresh_errors``."""
        return {
            **self.subscriber.stats(),
            "position": self.position,
            "frames_shown": self.frames_shown,
            "refresh_errors": self.refresh_errors,
        }

    def close(self) -> None:
        """Stop refreshing and detach; closes the napari viewer if this object made it."""
        self.stop()
        self.subscriber.close()
        for key, switch in self._keys.items():  # (a viewer of the user's lives on)
            unbound = self.viewer.bind_key(key, None)
            if unbound is not None and unbound is not switch:  # bound again since, by another
                self.viewer.bind_key(key, unbound)
        self._keys.clear()
        if self._owns_viewer:
            try:
                self.viewer.close()
            except RuntimeError:  # the user closed its window: Qt has deleted it already
                logger.debug("overlay viewer: its napari window was closed", exc_info=True)

    def __enter__(self) -> OverlayViewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
