"""Host networking for kernels: the host-port pool, the TLS front for kernel HTTP services and
the per-session local bridges."""
from berth.network.local_networks import LocalNetworks, check_network_name
from berth.network.ports import PortPool
from berth.network.service_tls import TLSServiceProxy

__all__ = [
    "LocalNetworks",
    "PortPool",
    "TLSServiceProxy",
    "check_network_name",
]
