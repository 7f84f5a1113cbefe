"""Registration, login and the current user (RealWorld ``/users`` and ``/user``)."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.v1.dependencies import CurrentCaller, HasherDep, SessionDep, TokensDep
from app.core.errors import error_responses
from app.models import User
from app.schemas.user import (
    LoginUserRequest,
    NewUserRequest,
    UpdateUserRequest,
    UserOut,
    UserResponse,
)
from app.services import users as user_service

router = APIRouter(tags=["Users"])


def _user_response(user: User, token: str) -> UserResponse:
    return UserResponse(
        user=UserOut(
            email=user.email,
            token=token,
            username=user.username,
            bio=user.bio,
            image=user.image,
        )
    )


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserResponse,
    summary="Register",
    description="Create an account and receive an access token. A taken username or email answers 422.",
    responses=error_responses(422),
)
async def register(
    body: NewUserRequest, session: SessionDep, hasher: HasherDep, tokens: TokensDep
) -> UserResponse:
    data = body.user
    user = await user_service.register(
        session,
        hasher,
        username=data.username,
        email=data.email,
        password=data.password,
    )
    return _user_response(user, tokens.issue(user.id))


@router.post(
    "/users/login",
    response_model=UserResponse,
    summary="Log in",
    description="Exchange email and password for an access token. Wrong credentials answer 401.",
    responses=error_responses(401, 422),
)
async def login(
    body: LoginUserRequest, session: SessionDep, hasher: HasherDep, tokens: TokensDep
) -> UserResponse:
    user = await user_service.authenticate(
        session, hasher, email=body.user.email, password=body.user.password
    )
    return _user_response(user, tokens.issue(user.id))


@router.get(
    "/user",
    response_model=UserResponse,
    summary="Current user",
    description="The authenticated user, with the token they presented.",
    responses=error_responses(401),
)
async def current_user(caller: CurrentCaller) -> UserResponse:
    return _user_response(caller.user, caller.token)


@router.put(
    "/user",
    response_model=UserResponse,
    summary="Update current user",
    description="Change any of email, username, password, bio and image. Sending unchanged values is fine.",
    responses=error_responses(401, 422),
)
async def update_current_user(
    body: UpdateUserRequest,
    caller: CurrentCaller,
    session: SessionDep,
    hasher: HasherDep,
) -> UserResponse:
    user = await user_service.update_user(session, hasher, caller.user, body.user)
    return _user_response(user, caller.token)
