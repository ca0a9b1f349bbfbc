"""Stats of kernels and of the node: cgroupfs readers, a bounded collector, psutil node stats."""

from berth.stats.blkio import (
    LOOP_MAJOR,
    BlkioLimits,
    BlockDevice,
    blkio_host_config,
    block_device_of,
    parse_rate,
)
from berth.stats.cgroup import CgroupParseError
from berth.stats.cgroupfs import CgroupReader
from berth.stats.collector import (
    DockerFallback,
    KernelMetricSource,
    SampleReader,
    StatsCollector,
)
from berth.stats.derive import HostCapacity
from berth.stats.docker_stats import sample_from_docker_stats
from berth.stats.models import (
    EMPTY_SNAPSHOT,
    CgroupVersion,
    ContainerSample,
    KernelStats,
    KernelTarget,
    Metric,
    NodeStats,
    ProcessStats,
    SampleSource,
    StatsSnapshot,
)
from berth.stats.moving import MovingStatistics
from berth.stats.node import DeviceSource, NodeCollector
from berth.stats.process import ProcessCollector
from berth.stats.scratch import ScratchMeter, scratch_usage

__all__ = [
    "EMPTY_SNAPSHOT",
    "LOOP_MAJOR",
    "BlkioLimits",
    "BlockDevice",
    "CgroupParseError",
    "CgroupReader",
    "CgroupVersion",
    "ContainerSample",
    "DeviceSource",
    "DockerFallback",
    "HostCapacity",
    "KernelMetricSource",
    "KernelStats",
    "KernelTarget",
    "Metric",
    "MovingStatistics",
    "NodeCollector",
    "NodeStats",
    "ProcessCollector",
    "ProcessStats",
    "SampleReader",
    "SampleSource",
    "ScratchMeter",
    "StatsCollector",
    "StatsSnapshot",
    "blkio_host_config",
    "block_device_of",
    "parse_rate",
    "sample_from_docker_stats",
    "scratch_usage",
]
