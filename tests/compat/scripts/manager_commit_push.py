"""commit and push_image as the manager's session-commit task sends them: commit with
LabelName enum keys in extra_labels, push with a real (pickled) ImageRef and the registry's
credentials. Both answer {"bgtask_id"} at once. Usage:
manager_commit_push.py commit KERNEL_ID CANONICAL | push CANONICAL PROJECT REGISTRY."""

from __future__ import annotations

import sys
import uuid
from typing import Any

from ai.backend.common.docker import ImageRef, LabelName
from ai.backend.common.types import KernelId
from harness import agent_client, main


async def body() -> dict[str, Any]:
    action = sys.argv[1]
    async with agent_client() as client:
        if action == "commit":
            kernel_id, canonical = sys.argv[2], sys.argv[3]
            labels = {
                LabelName.CUSTOMIZED_OWNER: "user:0e4b1c1e",
                LabelName.CUSTOMIZED_NAME: "compat image",
                LabelName.CUSTOMIZED_ID: "5b6f0e1c",
            }
            resp = await client.commit(KernelId(uuid.UUID(kernel_id)), "user_example.com",
                                       canonical=canonical, extra_labels=labels)
        else:
            canonical, project, registry = sys.argv[2], sys.argv[3], sys.argv[4]
            ref = ImageRef.from_image_str(canonical, project, registry,
                                          architecture="x86_64", is_local=False)
            resp = await client.push_image(ref, {"name": registry, "url": f"http://{registry}",
                                                 "username": "berth", "password": "secret"})
    return {"bgtask_id": str(resp["bgtask_id"])}


if __name__ == "__main__":
    main(body)
