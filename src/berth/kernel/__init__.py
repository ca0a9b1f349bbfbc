"""Kernels on this node: spec, state machine, registry, ledger, lifecycle and reconciliation."""

from berth.kernel.batch_session import run_batch_job
from berth.kernel.container_config import container_name, has_runner
from berth.kernel.deps import (
    EventSink,
    MountPlanner,
    PortRole,
    ResourceRole,
    RunnerFactory,
    RunnerRole,
    ScratchLayout,
    ScratchRole,
    WarmPoolRole,
)
from berth.kernel.exec_route import ExecRoutes
from berth.kernel.ledger import Ledger, LedgerEntry
from berth.kernel.lifecycle import KernelLifecycle, LifecycleSettings
from berth.kernel.policy import KernelPolicy
from berth.kernel.reconcile import Reconciler, ReconcileReport, plan_reconcile
from berth.kernel.registry import Kernel, KernelRegistry, KernelView, Termination
from berth.kernel.service_ports import ServicePort
from berth.kernel.spec import ImageConfig, KernelSpec, parse_kernel_spec
from berth.kernel.state import check_transition, classify_exit, is_transitional
from berth.kernel.warmplan import WARM_ID_LABEL, WARM_POOL_LABEL
from berth.kernel.warmpool import POOL_DIR, WarmPool, WarmPoolSettings

__all__ = [
    "POOL_DIR",
    "WARM_ID_LABEL",
    "WARM_POOL_LABEL",
    "EventSink",
    "ExecRoutes",
    "ImageConfig",
    "Kernel",
    "KernelLifecycle",
    "KernelPolicy",
    "KernelRegistry",
    "KernelSpec",
    "KernelView",
    "Ledger",
    "LedgerEntry",
    "LifecycleSettings",
    "MountPlanner",
    "PortRole",
    "ReconcileReport",
    "Reconciler",
    "ResourceRole",
    "RunnerFactory",
    "RunnerRole",
    "ScratchLayout",
    "ScratchRole",
    "ServicePort",
    "Termination",
    "WarmPool",
    "WarmPoolRole",
    "WarmPoolSettings",
    "check_transition",
    "classify_exit",
    "container_name",
    "has_runner",
    "is_transitional",
    "parse_kernel_spec",
    "plan_reconcile",
    "run_batch_job",
]
