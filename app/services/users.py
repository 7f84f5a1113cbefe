"""Registration, authentication and account changes."""

from __future__ import annotations

from sqlalchemy import exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import mark_changed
from app.core.errors import AuthenticationError, PermissionDeniedError, ValidationFailedError
from app.core.security import PasswordHasher
from app.db.base import utcnow
from app.db.dialect import insert_ignoring_conflicts
from app.models import RefreshToken, User
from app.schemas.user import UpdateUser, UpdateUserSettings, UserSettings
from app.services import media
from app.services.auth import end_sessions
from app.services.password_policy import check_password

TAKEN = "has already been taken"


async def _taken_fields(
    session: AsyncSession,
    *,
    username: str | None,
    email: str | None,
    exclude_id: int | None = None,
) -> dict[str, list[str]]:
    conditions = []
    if username is not None:
        conditions.append(func.lower(User.username) == username.lower())
    if email is not None:
        conditions.append(User.email == email)
    if not conditions:
        return {}
    stmt = select(User.username, User.email).where(or_(*conditions))
    if exclude_id is not None:
        stmt = stmt.where(User.id != exclude_id)
    fields: dict[str, list[str]] = {}
    for row in await session.execute(stmt):
        if username is not None and row.username.lower() == username.lower():
            fields["username"] = [TAKEN]
        if email is not None and row.email == email:
            fields["email"] = [TAKEN]
    return fields


def _taken_error(fields: dict[str, list[str]]) -> ValidationFailedError:
    return ValidationFailedError(" and ".join(f"{name} {TAKEN}" for name in fields), fields=fields)


async def create_user(session: AsyncSession, *, username: str, email: str, password_hash: str) -> User:
    """Insert a user whose password is already hashed; 422 if the username or email is taken."""
    if taken := await _taken_fields(session, username=username, email=email):
        raise _taken_error(taken)
    stmt = (
        insert_ignoring_conflicts(session, User)
        .values(username=username, email=email, password_hash=password_hash)
        .returning(User)
    )
    user = (await session.scalars(stmt)).one_or_none()
    if user is None:  # lost a race with a concurrent registration of the same name or email
        raise _taken_error(
            await _taken_fields(session, username=username, email=email) or {"username": [TAKEN]}
        )
    return user


async def register(
    session: AsyncSession,
    hasher: PasswordHasher,
    *,
    username: str,
    email: str,
    password: str,
    require_letter_and_digit: bool,
) -> User:
    check_password(
        password, username=username, email=email, require_letter_and_digit=require_letter_and_digit
    )
    if taken := await _taken_fields(session, username=username, email=email):
        raise _taken_error(taken)  # answer before spending a bcrypt hash on it
    return await create_user(
        session, username=username, email=email, password_hash=await hasher.hash(password)
    )


async def find_by_login(session: AsyncSession, login: str) -> User | None:
    """The account ``login`` names: an email (any case) or a username."""
    login = login.strip()
    condition = User.email == login.lower() if "@" in login else User.username == login
    return await session.scalar(select(User).where(condition))


async def authenticate(
    session: AsyncSession, hasher: PasswordHasher, user: User | None, password: str
) -> User:
    """``user`` if ``password`` is theirs (``user`` from ``find_by_login``, ``None`` if unknown).

    An unknown login and a wrong password fail alike, in like time (a dummy hash is verified).
    A hash made with outdated parameters is replaced while the plain password is at hand.
    """
    if not await hasher.verify(password, user.password_hash if user else None) or user is None:
        raise AuthenticationError(
            "email or password is invalid", fields={"email or password": ["is invalid"]}
        )
    if not user.is_active:
        raise PermissionDeniedError("this account has been deactivated")
    if hasher.needs_rehash(user.password_hash):
        user.password_hash = await hasher.hash(password)
        await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_session_user(session: AsyncSession, user_id: int, session_id: str | None) -> User | None:
    """The user an access token names, unless the token's session (refresh family) was ended:
    one statement, so logging out ends that session's access tokens too."""
    if session_id is None:
        return await get_user(session, user_id)
    ended = (
        exists()
        .where(RefreshToken.family_id == session_id, RefreshToken.revoked_at.is_not(None))
        .label("ended")
    )
    row = (await session.execute(select(User, ended).where(User.id == user_id))).one_or_none()
    return None if row is None or row.ended else row[0]


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def set_password(
    session: AsyncSession,
    hasher: PasswordHasher,
    user: User,
    password: str,
    *,
    require_letter_and_digit: bool,
    keep_family: str | None = None,
) -> None:
    """Change the password under the policy and end every other session."""
    check_password(
        password, username=user.username, email=user.email, require_letter_and_digit=require_letter_and_digit
    )
    user.password_hash = await hasher.hash(password)
    await end_sessions(session, user, keep_family=keep_family)


async def update_user(
    session: AsyncSession,
    hasher: PasswordHasher,
    user: User,
    changes: UpdateUser,
    *,
    require_letter_and_digit: bool,
    keep_family: str | None = None,
) -> User:
    """Apply the fields sent. Sending one's own unchanged username or email is fine.

    A new password ends the user's other sessions (``keep_family`` is the caller's own refresh family).
    """
    new_username = changes.username if changes.username not in (None, user.username) else None
    new_email = changes.email if changes.email not in (None, user.email) else None
    if taken := await _taken_fields(session, username=new_username, email=new_email, exclude_id=user.id):
        raise _taken_error(taken)
    if new_username is not None:
        user.username = new_username
    if new_email is not None:
        user.email = new_email
        user.email_verified_at = None  # the new address has not been verified
    if changes.password is not None:
        await set_password(
            session,
            hasher,
            user,
            changes.password,
            require_letter_and_digit=require_letter_and_digit,
            keep_family=keep_family,
        )
    if changes.bio is not None:
        user.bio = changes.bio
    # The latest of an upload and a URL wins; a client sending back the avatar's own URL (as settings
    # forms do) keeps it.
    if "image" in changes.model_fields_set and not media.is_avatar_url(changes.image, user):
        user.image = changes.image or ""
        await media.remove_avatar(session, user)
    user.updated_at = utcnow()
    await session.flush()
    mark_changed(session)  # the user's profile appears in cached articles and comments
    return user


def settings_of(user: User) -> UserSettings:
    return UserSettings(
        email_on_follow=user.email_on_follow,
        email_on_comment=user.email_on_comment,
        weekly_digest=user.weekly_digest,
    )


async def update_settings(session: AsyncSession, user: User, changes: UpdateUserSettings) -> UserSettings:
    """Apply the settings sent; the others keep their values."""
    for name in changes.model_fields_set:
        value = getattr(changes, name)
        if value is not None:
            setattr(user, name, value)
    await session.flush()
    return settings_of(user)
