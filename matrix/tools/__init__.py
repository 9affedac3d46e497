"""Tool servers for tool-using cases: sandboxes, the tau2 server, and a pool that leases sessions on them."""

from matrix.tools.pool import Lease, ToolPoolConfig, ToolServerError, ToolServerPool, call_tool
from matrix.tools.sandbox import SandboxUnavailable, detect_sandbox, sandbox_argv

__all__ = [
    "Lease",
    "SandboxUnavailable",
    "ToolPoolConfig",
    "ToolServerError",
    "ToolServerPool",
    "call_tool",
    "detect_sandbox",
    "sandbox_argv",
]
