"""Planning: per-group channel targets that meet a budget at least predicted loss.

`ChannelPlan` holds kept channels per group; `CostModel` predicts a cost
(latency, MACs, parameters) from them, built by measuring one-layer models
(`measure_sites`, `count_site_costs`); `allocate` chooses the counts;
`ScoreSensitivity` and `MeasuredSensitivity` predict the accuracy loss.
Latency tables are measured by `tflite_export.latency_table` (tfprune does
not run converters or runtimes); `prune_channels(..., plan=plan)` follows a
plan during fine-tuning.
"""

from tfprune.planning.allocator import Allocation, allocate
from tfprune.planning.channel_plan import ChannelPlan, group_key
from tfprune.planning.cost_model import (
    CostModel,
    SiteCost,
    count_site_costs,
    grid_levels,
    measure_sites,
)
from tfprune.planning.sensitivity import MeasuredSensitivity, ScoreSensitivity
