"""SQLAlchemy models. Importing this package registers every table on ``Base.metadata``."""

from app.models.article import Article, ArticleTag, Favorite, Tag
from app.models.comment import Comment
from app.models.user import Follow, User

__all__ = ["Article", "ArticleTag", "Comment", "Favorite", "Follow", "Tag", "User"]
