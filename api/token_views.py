"""The API tokens page: a person creates and revokes their own tokens."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from .models import ApiToken
from .services import token_create, token_revoke


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What it is for, so you can tell your tokens apart (e.g. “CI deploys”).",
    )


def _page(request, form, *, new_token=None, status=200):
    tokens = ApiToken.objects.filter(owner=request.user).order_by("revoked_at", "-created_at")
    return render(
        request,
        "api/tokens.html",
        {"form": form, "tokens": tokens, "new_token": new_token},
        status=status,
    )


@login_required
def token_list(request):
    """GET: the tokens. POST: create one and show it, this once (it is not stored)."""
    if request.method != "POST":
        return _page(request, TokenForm())
    form = TokenForm(request.POST)
    if form.is_valid():
        try:
            token, plain = token_create(owner=request.user, name=form.cleaned_data["name"])
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, errors)
        else:
            # Rendered directly, not redirected: the token must not go through the session.
            return _page(request, TokenForm(), new_token={"token": token, "plain": plain})
    return _page(request, form, status=422)


@login_required
@require_POST
def token_revoke_view(request, uuid):
    token = get_object_or_404(ApiToken, uuid=uuid, owner=request.user)
    if token_revoke(token=token):
        messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
    return redirect("tokens:list")
