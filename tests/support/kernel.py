"""A real IPython kernel (jupyter_client), driven the way a notebook drives it."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Output:
    time: float
    kind: str
    content: dict[str, Any]


@dataclass
class Executed:
    outputs: list[Output] = field(default_factory=list)
    reply: dict[str, Any] = field(default_factory=dict)
    ended: float = 0.0

    def text(self, stream: str = "stdout") -> str:
        return "".join(
            o.content["text"]
            for o in self.outputs
            if o.kind == "stream" and o.content["name"] == stream
        )

    @property
    def ok(self) -> bool:
        return self.reply.get("status") == "ok"

    @property
    def error(self) -> str:
        """The error's name, value and traceback as one text, without terminal colours."""
        for o in self.outputs:
            if o.kind == "error":
                text = "\n".join([o.content["ename"], o.content["evalue"], *o.content["traceback"]])
                return ANSI.sub("", text)
        return ""

    def data(self, mime: str) -> list[Any]:
        return [
            o.content["data"][mime]
            for o in self.outputs
            if o.kind in {"display_data", "execute_result"} and mime in o.content["data"]
        ]


class Kernel:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def execute(self, code: str, timeout: float = 120, on_output: Any = None) -> Executed:
        msg_id = self.client.execute(code)
        done = Executed()
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                done.ended = time.monotonic()
                break
            if kind in {"stream", "display_data", "execute_result", "error", "clear_output"}:
                done.outputs.append(Output(time.monotonic(), kind, content))
                if on_output is not None:
                    on_output(done.outputs[-1])
        while True:
            reply = self.client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                done.reply = reply["content"]
                return done

    def ok(self, code: str, timeout: float = 120, on_output: Any = None) -> Executed:
        """Execute, and fail the test with the kernel's error if it raised."""
        done = self.execute(code, timeout, on_output)
        assert done.ok, done.error or done.outputs
        return done

    def value(self, expression: str) -> Any:
        """A Python literal the kernel computes (through repr and literal_eval)."""
        import ast

        done = self.ok(f"print(repr({expression}))")
        return ast.literal_eval(done.text().strip())

    def interrupt(self) -> None:
        self.manager.interrupt_kernel()

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
