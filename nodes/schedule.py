"""InstructPix2Pix Guidance Schedule: text_cfg and image_cfg that change over the steps."""
from __future__ import annotations

from ..ipx2p_core.schedule import CURVES, GuidanceSchedule, ScheduleError
from ._comfy import io
from .common import input_error

NODE = "IPX2P_GuidanceSchedule"
ScheduleType = io.Custom("IPX2P_SCHEDULE")
SCHEDULE_TOOLTIP = (
    "Optional: text_cfg and image_cfg over the steps, from 'InstructPix2Pix Guidance Schedule'. With a schedule this "
    "node's text_cfg / image_cfg widgets are ignored (a guidance_map's outside values still apply). Steps where "
    "image_cfg is 1 skip the unconditional branch.")
PROGRESS_NOTE = (
    "Progress runs from 0 at the first step to 1 at the last, measured on the sampler's noise levels (log sigma), "
    "so it means the same for every sampler and step count.")


class GuidanceScheduleNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="InstructPix2Pix Guidance Schedule",
            category="instructpix2pix",
            description=("Scales that change over the steps, for Edit, Guider and Guidance Sweep's `schedule` input: "
                         "e.g. follow the instruction hard early (layout) and stay close to the picture late "
                         "(detail). " + PROGRESS_NOTE),
            inputs=[
                io.Float.Input("text_cfg_start", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="text_cfg at the first step."),
                io.Float.Input("text_cfg_end", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="text_cfg at the last step."),
                io.Float.Input("image_cfg_start", default=1.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="image_cfg at the first step."),
                io.Float.Input("image_cfg_end", default=1.8, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="image_cfg at the last step."),
                io.Combo.Input("curve", options=list(CURVES), default="linear",
                               tooltip="How the scales go from one keyframe to the next: linear, cosine (eased), or "
                                       "constant (the earlier keyframe's values hold until the next; without "
                                       "keyframes the start values hold throughout)."),
                io.String.Input("keyframes", default="", multiline=True, optional=True,
                                tooltip="Optional, replaces the four widgets above: 'progress: text/image' entries, "
                                        "e.g. '0: 7.5/1.5, 0.6: 5/1.8, 1: 3/2'. " + PROGRESS_NOTE),
            ],
            outputs=[ScheduleType.Output("schedule", display_name="schedule",
                                         tooltip="Connect to the schedule input of Edit, Guider or Guidance Sweep.")],
        )

    @classmethod
    def execute(cls, text_cfg_start: float, text_cfg_end: float, image_cfg_start: float, image_cfg_end: float,
                curve: str, keyframes: str = "") -> io.NodeOutput:
        if curve not in CURVES:
            raise input_error(NODE, "curve", f"is {curve!r}", f"one of {', '.join(CURVES)}", "choose one from the list")
        try:
            if keyframes.strip():
                schedule = GuidanceSchedule.parse_keyframes(keyframes, curve)
            else:
                schedule = GuidanceSchedule.from_ends(text_cfg_start, text_cfg_end, image_cfg_start, image_cfg_end, curve)
        except ScheduleError as error:
            raise input_error(NODE, "keyframes" if keyframes.strip() else "text_cfg_start", error.given, error.expected,
                              error.fix) from None
        return io.NodeOutput(schedule)
