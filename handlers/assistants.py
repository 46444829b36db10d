"""/dialogs: assistants (the bots' identities and the websites allowed to embed
their widget), owned by a user; an admin sees and changes every one."""
from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from handlers import dialogs as dlg
from handlers.context import Context
from handlers.errors import Forbidden, NotFound
from handlers.registry import operation, server_event
from handlers.roles import ADMIN, OWNERS
from handlers.schema import Id, Input, Output, Page, Paging, Text
from storage import dialogs as store
from storage.base import aware


class AssistantOut(Output):
    id: int
    name: str
    allowed_origins: list[str]
    owner_id: int
    system_prompt: str | None
    created_at: datetime



class AssistantDeleted(Output):
    assistant_id: int



def _origins(value: list[str]) -> list[str]:
    out = []
    for o in value:
        norm = dlg.normalize_origin(o)
        if not dlg.ORIGIN.match(norm):
            raise ValueError(f"{o!r} is not an origin like https://example.com[:port]")
        out.append(norm)
    return list(dict.fromkeys(out))


class CreateAssistant(Input):
    name: Text(200, min_length=1)
    allowed_origins: list[Text(200)] = Field(default_factory=list, max_length=50)
    system_prompt: Text(20000) | None = None

    @field_validator("allowed_origins")
    @classmethod
    def _check(cls, value):
        return _origins(value)


class AssistantRef(Input):
    assistant_id: Id


class UpdateAssistant(AssistantRef):
    name: Text(200, min_length=1) | None = None
    allowed_origins: list[Text(200)] | None = Field(None, max_length=50)
    system_prompt: Text(20000) | None = None

    @field_validator("allowed_origins")
    @classmethod
    def _check(cls, value):
        return None if value is None else _origins(value)


class ListAssistants(Paging):
    pass



@server_event(dlg.DIALOGS, "assistant:changed")
class AssistantChanged(Output):
    """An assistant was created, changed or deleted. Sent to its owner; every
    instance also hears it on the bus and refreshes the widget origins it allows."""

    assistant_id: int
    deleted: bool = False



def assistant_out(a: store.Assistant) -> AssistantOut:
    return AssistantOut(id=a.id, name=a.name, allowed_origins=a.allowed_origins, owner_id=a.owner_id,
                        system_prompt=a.system_prompt, created_at=aware(a.created_at))



async def owned_assistant(tx, ctx: Context, assistant_id: int) -> store.Assistant:
    a = await store.get_assistant(tx, assistant_id)
    if a is None:
        raise NotFound("no such assistant")
    if a.owner_id != ctx.actor.id and ctx.actor.role != ADMIN:
        raise Forbidden("this assistant is not yours")
    return a



# --- operations: assistants ---------------------------------------------------------------

@operation(dlg.DIALOGS, "assistant:create", roles=OWNERS, http=("POST", "/api/assistants"))
async def create_assistant(ctx: Context, req: CreateAssistant) -> AssistantOut:
    """Create an assistant owned by the caller, with the website origins allowed to embed its widget."""
    async with ctx.transaction() as tx:
        a = await store.create_assistant(tx, owner_id=ctx.actor.id, name=req.name,
                                         allowed_origins=req.allowed_origins, system_prompt=req.system_prompt)
        ctx.emit(AssistantChanged(assistant_id=a.id), users=[a.owner_id])
        return assistant_out(a)


@operation(dlg.DIALOGS, "assistants:list", roles=OWNERS, http=("GET", "/api/assistants"))
async def list_assistants(ctx: Context, req: ListAssistants) -> Page[AssistantOut]:
    """The caller's assistants (an admin's: everyone's)."""
    owner = None if ctx.actor.role == ADMIN else ctx.actor.id
    async with ctx.transaction() as tx:
        rows, total = await store.list_assistants(tx, owner, req.limit, req.offset)
    return Page[AssistantOut](total=total, limit=req.limit, offset=req.offset, items=[assistant_out(a) for a in rows])


@operation(dlg.DIALOGS, "assistant:update", roles=OWNERS, http=("PUT", "/api/assistants/{assistant_id}"))
async def update_assistant(ctx: Context, req: UpdateAssistant) -> AssistantOut:
    """Change an assistant's name, allowed origins or system prompt (owner only)."""
    async with ctx.transaction() as tx:
        a = await owned_assistant(tx, ctx, req.assistant_id)
        fields = req.model_dump(exclude_unset=True, exclude={"assistant_id"})
        if fields.get("name", "") is None:
            del fields["name"]
        if fields.get("allowed_origins", []) is None:
            del fields["allowed_origins"]
        await store.update_assistant(tx, a, **fields)
        ctx.emit(AssistantChanged(assistant_id=a.id), users=[a.owner_id])
        return assistant_out(a)


@operation(dlg.DIALOGS, "assistant:delete", roles=OWNERS, http=("DELETE", "/api/assistants/{assistant_id}"))
async def delete_assistant(ctx: Context, req: AssistantRef) -> AssistantDeleted:
    """Delete an assistant and its dialogs (owner only)."""
    async with ctx.transaction() as tx:
        a = await owned_assistant(tx, ctx, req.assistant_id)
        await store.delete_assistant(tx, a)
        ctx.emit(AssistantChanged(assistant_id=a.id, deleted=True), users=[a.owner_id])
    return AssistantDeleted(assistant_id=req.assistant_id)
