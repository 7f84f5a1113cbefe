"""SQLAlchemy models. Importing this package registers every table on ``Base.metadata``."""

from app.models.article import Article, ArticleTag, Favorite, Tag
from app.models.comment import Comment
from app.models.export import Export, ExportState
from app.models.idempotency import IdempotencyKey
from app.models.notification import Notification, NotificationKind
from app.models.token import OneTimeToken, RefreshToken, TokenPurpose
from app.models.upload import Upload
from app.models.user import Follow, Role, User

__all__ = [
    "Article",
    "ArticleTag",
    "Comment",
    "Export",
    "ExportState",
    "Favorite",
    "Follow",
    "IdempotencyKey",
    "Notification",
    "NotificationKind",
    "OneTimeToken",
    "RefreshToken",
    "Role",
    "Tag",
    "TokenPurpose",
    "Upload",
    "User",
]
