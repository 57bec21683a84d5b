from django.utils import timezone
from rest_framework import authentication, exceptions

from guardrails.models import OperatorToken, hash_token


class OperatorTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` for the operator API. Tokens are looked up by hash."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        row = (
            OperatorToken.objects.select_related("user")
            .filter(token_hash=hash_token(token), revoked_at__isnull=True)
            .first()
        )
        if row is None or not row.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid token.")
        OperatorToken.objects.filter(pk=row.pk).update(last_used_at=timezone.now())
        return row.user, row

    def authenticate_header(self, request):
        return self.keyword
