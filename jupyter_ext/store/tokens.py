"""Issued tokens: one row each, so they can be listed and revoked.

A token is checked by its signature and its expiry alone; the only thing a server asks the
database about tokens while it serves requests is which were revoked lately
(:meth:`TokenStore.revoked_since`), once a second.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from labrun.errors import NotFound, Unauthorized
from labrun.models import DescribeToken, IssuedToken, ListTokensQuery, TokenList

from .. import auth
from .database import Database
from .runs import RunStore
from .tables import ServerSetting, Token, utcnow


def describe(row: Token, now: datetime | None = None) -> DescribeToken:
    now = now or utcnow()
    status = "revoked" if row.revoked_at else "expired" if row.expires_at <= now else "active"
    return DescribeToken(
        id=row.id,
        name=row.name,
        user=row.user,
        scope=row.scope,
        run_id=row.run_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        status=status,
    )


class TokenStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._secret: str | None = None

    @property
    def secret(self) -> str:
        """The signing secret, made once and shared by every server on the database."""
        if self._secret is None:
            with self.db.session() as session:
                row = session.get(ServerSetting, "token_secret")
                if row is None:
                    row = ServerSetting(key="token_secret", value=auth.new_secret())
                    session.add(row)
                self._secret = row.value
        return self._secret

    def add(
        self,
        session: Session,
        *,
        user: str,
        name: str,
        scope: auth.Scope,
        lifetime: float,
        run_id: int | None = None,
    ) -> IssuedToken:
        """Issue a token inside ``session`` (a job's, with its dispatch)."""
        now = utcnow()
        row = Token(
            id=auth.new_id(),
            user=user,
            name=name,
            scope=scope,
            run_id=run_id,
            created_at=now,
            expires_at=now + timedelta(seconds=lifetime),
        )
        session.add(row)
        token = auth.issue(
            self.secret,
            token_id=row.id,
            user=user,
            name=name,
            scope=scope,
            run_id=run_id,
            issued=now.timestamp(),
            expires=row.expires_at.timestamp(),
        )
        return IssuedToken(**describe(row, now).model_dump(), token=token)

    def issue(
        self,
        *,
        user: str,
        name: str,
        scope: auth.Scope,
        lifetime: float,
        run_id: int | None = None,
    ) -> IssuedToken:
        with self.db.session() as session:
            if run_id is not None:
                RunStore.load(session, run_id)
            return self.add(
                session, user=user, name=name, scope=scope, lifetime=lifetime, run_id=run_id
            )

    def list_tokens(self, query: ListTokensQuery, user: str | None) -> TokenList:
        """Newest first: ``user``'s tokens, or everyone's when ``user`` is None."""
        now = utcnow()
        stmt = select(Token).order_by(Token.created_at.desc(), Token.id)
        if user is not None:
            stmt = stmt.where(Token.user == user)
        if not query.all:
            stmt = stmt.where(Token.revoked_at.is_(None), Token.expires_at > now)
        with self.db.session() as session:
            rows = session.scalars(stmt.limit(query.limit)).all()
            return TokenList(tokens=[describe(row, now) for row in rows])

    def revoke(self, token_id: str, *, by: str, admin: bool) -> DescribeToken:
        """Revoke a token; ``by`` must be its user unless ``admin``. Revoking twice is fine."""
        with self.db.session() as session:
            row = session.get(Token, token_id)
            if row is None:
                raise NotFound(f"no token with id {token_id!r}; `labrun tokens` lists yours")
            if row.user != by and not admin:
                raise Unauthorized(
                    f"token {token_id} belongs to {row.user!r}; only they or an admin can "
                    "revoke it (admins are listed in c.LabRun.admins)"
                )
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                row.revoked_by = by
            session.flush()
            return describe(row)

    def revoke_ids(self, token_ids: list[str], by: str) -> None:
        """Revoke tokens the server itself issued (a job's, once the job ended)."""
        with self.db.session() as session:
            for row in session.scalars(
                select(Token).where(Token.id.in_(token_ids), Token.revoked_at.is_(None))
            ):
                row.revoked_at = utcnow()
                row.revoked_by = by

    def revoked_since(self, since: datetime | None) -> dict[str, float]:
        """Tokens revoked since ``since`` (all of them when None) that have not expired yet:
        their ids, with when they expire (Unix seconds)."""
        stmt = select(Token.id, Token.expires_at).where(
            Token.revoked_at.is_not(None), Token.expires_at > utcnow()
        )
        if since is not None:
            stmt = stmt.where(Token.revoked_at >= since)
        with self.db.session() as session:
            return {token_id: expires.timestamp() for token_id, expires in session.execute(stmt)}
