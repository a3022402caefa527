"""``manage.py seed_demo``: a ``demo`` user with one agent per demo function, an HTTP one, and
two flows of them (``pipeline``: a step that fails once and succeeds on its retry; ``fan-out``: a
wait and steps in parallel).

Idempotent: a second run creates nothing. It puts back the demo settings of an agent someone
changed, and keeps the demo user's password unless ``CONVEYOR_DEMO_PASSWORD`` says otherwise.
Flows come after the agents they run, which their steps name (stored by UUID: a flow is
compared with its demo settings cleaned for its owner, so a second run leaves it as it is).

``--login`` changes nothing and prints the login again (``make run`` shows it last, under the
addresses, once the output of the set-up has scrolled by). A password the command made up is
kept for that in ``var/demo-password`` (readable by its owner only); one chosen with
``CONVEYOR_DEMO_PASSWORD`` is never written down or printed. ``--superuser`` also creates a
local superuser, ``admin``, with a made-up password (``DEBUG`` installations only).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents.functions import get_function
from agents.kinds import get_kind
from agents.kinds.base import ConfigInvalid
from agents.models import Agent
from agents.services import agent_create, agent_update

USERNAME = "demo"
SUPERUSER = "admin"
# The apps whose models the demo user may see and change in the admin.
DEMO_APPS = ("agents", "executions")


@dataclass(frozen=True)
class DemoAgent:
    name: str
    kind: str
    config: dict[str, Any]
    description: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    # An optional agent that fails validation is reported and skipped; a required one stops
    # the command with a non-zero exit.
    optional: bool = False
    try_input: str = ""


def _describe(function_name: str) -> str:
    fn = get_function(function_name)
    return fn.description if fn else ""


def demo_agents() -> list[DemoAgent]:
    return [
        DemoAgent(
            "echo",
            "function",
            {"function": "demo.echo"},
            _describe("demo.echo"),
            try_input='{"hello": "world"}',
        ),
        DemoAgent(
            "flaky",
            "function",
            {"function": "demo.flaky"},
            _describe("demo.flaky"),
            {"retry_backoff": 2, "max_retries": 3, "retry_jitter": False},
            try_input='{"fail_times": 2}',
        ),
        DemoAgent(
            "slow",
            "function",
            {"function": "demo.slow"},
            _describe("demo.slow"),
            {"timeout": 120},
            try_input='{"seconds": 10, "steps": 10}',
        ),
        DemoAgent("broken", "function", {"function": "demo.broken"}, _describe("demo.broken")),
        DemoAgent(
            "count",
            "function",
            {"function": "demo.count"},
            _describe("demo.count"),
            try_input='{"to": 10, "seconds": 0.5}',
        ),
        DemoAgent(
            "report",
            "function",
            {"function": "demo.report"},
            _describe("demo.report"),
            # Its per-day debug lines are left out of the run's log: only info and above kept.
            {"log_level": "info"},
            try_input='{"days": 7}',
        ),
        DemoAgent(
            "http-example",
            "http",
            {
                "method": "GET",
                "url": "https://httpbin.org/get",
                "body": "none",
                "timeout": 30,
                "expected_statuses": "200-299",
            },
            "Calls a public echo service over HTTPS (needs Internet access).",
            optional=True,
        ),
        # Flows last: their steps run the agents above.
        DemoAgent(
            "pipeline",
            "flow",
            {
                "steps": [
                    {
                        "key": "fetch",
                        "agent": "echo",
                        "input": {"report": "{{ input.report }}", "rows": [3, 1, 2]},
                    },
                    {
                        # Fails once, then succeeds: its own retry settings, quicker than
                        # the flaky agent's.
                        "key": "transform",
                        "agent": "flaky",
                        "input": {"fail_times": 1},
                        "retry": {"max_retries": 2, "backoff": 1, "jitter": False},
                    },
                    {
                        "key": "deliver",
                        "agent": "echo",
                        "input": {
                            "report": "{{ steps.fetch.result.report }}",
                            "rows": "{{ steps.fetch.result.rows }}",
                            "transformed_on_attempt": (
                                "{{ steps.transform.result.succeeded_on_attempt }}"
                            ),
                            "message": "The {{ steps.fetch.result.report }} report is ready.",
                        },
                    },
                ],
                "timeout": 300,
                "result": "last",
            },
            "A flow: fetch, transform (fails once, then its retry succeeds), deliver; each "
            "step reads the results of the steps before it.",
            try_input='{"report": "weekly"}',
        ),
        DemoAgent(
            "fan-out",
            "flow",
            {
                "steps": [
                    {
                        "key": "prepare",
                        "agent": "echo",
                        "input": {"batch": "{{ input.batch }}", "items": ["a", "b", "c"]},
                    },
                    {"key": "cool-off", "wait": {"seconds": 5}},
                    {
                        "key": "work",
                        "parallel": [
                            {"key": "a", "agent": "slow", "input": {"seconds": 2, "steps": 4}},
                            {"key": "b", "agent": "slow", "input": {"seconds": 3, "steps": 3}},
                            {
                                "key": "c",
                                "agent": "echo",
                                "input": {"item": "{{ steps.prepare.result.items.2 }}"},
                            },
                        ],
                    },
                    {
                        "key": "summarise",
                        "agent": "echo",
                        "input": {
                            "batch": "{{ steps.prepare.result.batch }}",
                            "results": "{{ steps.work.result }}",
                        },
                    },
                ],
                "timeout": 600,
                "result": "last",
            },
            "A flow: prepare, wait 5 s, run three steps in parallel, then summarise their results.",
            try_input='{"batch": "demo"}',
        ),
    ]


def site_url() -> str:
    """Where ``make run`` serves Conveyor (its web process listens on $PORT)."""
    return f"http://127.0.0.1:{os.environ.get('PORT') or 8000}/"


def remembered_password_file():
    return settings.VAR_DIR / "demo-password"


def remember_password(password: str | None) -> None:
    """Keep a made-up password for ``--login`` (None forgets it)."""
    path = remembered_password_file()
    path.unlink(missing_ok=True)
    if password:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password)


def remembered_password(user) -> str | None:
    """The made-up password, if it is still the user's."""
    try:
        password = remembered_password_file().read_text().strip()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return password if password and user.check_password(password) else None


def manage(command: str) -> str:
    """A management command as someone can type it in another terminal: through ``uv run`` (the
    project's environment) and, for local development, with the DEBUG that ``make`` sets."""
    debug = "DEBUG=true " if settings.DEBUG and os.environ.get("DEBUG") else ""
    return f"{debug}uv run python manage.py {command}"


class Command(BaseCommand):
    help = (
        "Create (or put back) the demo user and its demo agents. Safe to run again: it creates "
        "nothing new. The password comes from CONVEYOR_DEMO_PASSWORD, or is made up and printed "
        "on the first run."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--login",
            action="store_true",
            help="Change nothing: print the address and the demo login again.",
        )
        parser.add_argument(
            "--superuser",
            action="store_true",
            help=f"Also create a local superuser, “{SUPERUSER}”, with a made-up password "
            "(DEBUG only; elsewhere use createsuperuser).",
        )

    def handle(self, *args, **options):
        if options["login"]:
            self._print_login()
            return
        if options["superuser"] and not settings.DEBUG:
            raise CommandError(
                "--superuser makes a local administrator and needs DEBUG=true. On a real "
                f"installation use: {manage('createsuperuser')}"
            )
        user, password_note = self._demo_user()
        failed_required = []
        rows = []
        for spec in demo_agents():
            try:
                agent, what = self._agent(user, spec)
            except ValidationError as exc:
                errors = "; ".join(
                    f"{name}: {' '.join(msgs)}" for name, msgs in exc.message_dict.items()
                )
                self.stderr.write(
                    self.style.WARNING(f"Warning: skipped the agent “{spec.name}”: {errors}")
                )
                if not spec.optional:
                    failed_required.append(spec.name)
                continue
            rows.append((agent, what, spec))

        superuser_note = self._superuser() if options["superuser"] else None

        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING("Log in"))
        self.stdout.write(f"  URL:      {site_url()}   (admin: {site_url()}admin/)")
        self.stdout.write(f"  username: {user.get_username()}")
        self.stdout.write(f"  password: {password_note}")
        if superuser_note:
            self.stdout.write(f"  superuser: {SUPERUSER}, password: {superuser_note}")
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(f"Agents of {user.get_username()}"))
        width = max((len(agent.name) for agent, _, _ in rows), default=0)
        for agent, what, _spec in rows:
            self.stdout.write(
                f"  {agent.name:<{width}}  {agent.kind:<8}  {what:<9}  {agent.description}"
            )
        self.stdout.write("")
        self.stdout.write("Run one from the command line (a worker must be running):")
        for _, _, spec in rows:
            given = f" --input '{spec.try_input}'" if spec.try_input else ""
            self.stdout.write(
                f"  {manage('run_agent')} {user.get_username()}/{spec.name}{given} --wait"
            )
        if failed_required:
            raise CommandError(f"Could not set up the demo agents: {', '.join(failed_required)}.")

    def _print_login(self) -> None:
        """The login as ``make run`` shows it last; changes nothing."""
        User = get_user_model()
        user = User._default_manager.filter(**{User.USERNAME_FIELD: USERNAME}).first()
        self.stdout.write("")
        self.stdout.write(f"  Conveyor: {site_url()}   (admin: {site_url()}admin/)")
        if user is None:
            self.stdout.write("  No demo user yet: run `make seed` to create it.")
            return
        if settings.CONVEYOR_DEMO_PASSWORD and user.check_password(settings.CONVEYOR_DEMO_PASSWORD):
            shown = "the value of CONVEYOR_DEMO_PASSWORD"
        else:
            shown = remembered_password(user) or (
                "not known here (set CONVEYOR_DEMO_PASSWORD and run `make seed` to choose one)"
            )
        self.stdout.write(f"  Sign in as {user.get_username()}, password: {shown}")

    def _superuser(self) -> str:
        """Create the local superuser if it is missing; return what to print as its password."""
        User = get_user_model()
        if User._default_manager.filter(**{User.USERNAME_FIELD: SUPERUSER}).exists():
            return f"unchanged ({manage('changepassword')} {SUPERUSER} sets a new one)"
        password = secrets.token_urlsafe(12)
        User._default_manager.create_superuser(
            **{User.USERNAME_FIELD: SUPERUSER}, email="admin@example.com", password=password
        )
        self.stdout.write(f"Created the superuser “{SUPERUSER}”.")
        return f"{password}   (made up now, printed once)"

    def _demo_user(self):
        """Create or update the demo user; return it and what to print as its password."""
        User = get_user_model()
        wanted = settings.CONVEYOR_DEMO_PASSWORD or None
        with transaction.atomic():
            user, created = User._default_manager.get_or_create(
                **{User.USERNAME_FIELD: USERNAME},
                defaults={"email": "demo@example.com"} if hasattr(User, "email") else {},
            )
            generated = None
            if wanted:
                if not user.check_password(wanted):
                    user.set_password(wanted)
            elif created or not user.has_usable_password():
                generated = secrets.token_urlsafe(12)
                user.set_password(generated)
            # Staff, to log in to the admin, with the permissions of the Conveyor apps only:
            # a demo account is not an administrator of the installation.
            user.is_staff = True
            user.is_active = True
            user.save()
            user.user_permissions.add(
                *Permission.objects.filter(content_type__app_label__in=DEMO_APPS)
            )
        if wanted:
            remember_password(None)
        elif generated:
            remember_password(generated)
        if wanted:
            note = "the value of CONVEYOR_DEMO_PASSWORD"
        elif generated:
            note = f"{generated}   (made up now; set CONVEYOR_DEMO_PASSWORD to choose one)"
        else:
            note = (
                "unchanged (printed when the user was created; set CONVEYOR_DEMO_PASSWORD "
                "to choose one)"
            )
        if created:
            self.stdout.write(f"Created the user “{user.get_username()}”.")
        else:
            self.stdout.write(f"The user “{user.get_username()}” already exists.")
        return user, note

    def _agent(self, user, spec: DemoAgent) -> tuple[Agent, str]:
        """Create the agent, or put back its demo settings. Returns it and what happened."""
        values = {
            "kind": spec.kind,
            "config": spec.config,
            "description": spec.description,
            "is_paused": False,
            **spec.fields,
        }
        agent = Agent.objects.filter(owner=user, name=spec.name).first()
        if agent is None:
            agent = agent_create(owner=user, name=spec.name, **values)
            return agent, "created"
        changed = {
            name: value
            for name, value in values.items()
            if name != "config" and getattr(agent, name) != value
        }
        if agent.kind != spec.kind or agent.config != self._clean_config(spec, agent=agent):
            changed["config"] = spec.config
            changed["kind"] = spec.kind
        if not changed:
            return agent, "unchanged"
        agent_update(agent=agent, **changed)
        return agent, "updated"

    @staticmethod
    def _clean_config(spec: DemoAgent, *, agent: Agent) -> dict[str, Any] | None:
        """The config as the kind stores it for ``agent`` (a flow's steps name their agents by
        UUID), to compare with the stored one (None: invalid)."""
        kind = get_kind(spec.kind)
        if kind is None:
            return None
        try:
            return kind.clean_config(spec.config, agent=agent)
        except ConfigInvalid:
            return None
