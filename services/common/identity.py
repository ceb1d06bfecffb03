"""WhoAmI: every server tells a caller the role and scope of the key it presents (the server factory adds it)."""

from __future__ import annotations

from typing import Any

from v2x.common.v1 import common_pb2, identity_pb2

from services.common.principal import Role, current_principal

SERVICE = identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
POLICY = {"WhoAmI": frozenset(Role)}
ROLES = {Role.OPERATOR: common_pb2.ROLE_OPERATOR, Role.CAMERA: common_pb2.ROLE_CAMERA,
         Role.POLICE: common_pb2.ROLE_POLICE, Role.DRIVER: common_pb2.ROLE_DRIVER, Role.ADMIN: common_pb2.ROLE_ADMIN,
         Role.PLATFORM: common_pb2.ROLE_PLATFORM}


class IdentityServicer:
    async def WhoAmI(self, request: identity_pb2.WhoAmIRequest, context: Any) -> identity_pb2.WhoAmIResponse:
        principal = current_principal()
        return identity_pb2.WhoAmIResponse(role=ROLES[principal.role], scope=principal.scope or "",
                                           key_id=principal.key_id)
