from django.core.management.base import BaseCommand, CommandError

from events.sources import demo


class Command(BaseCommand):
    help = "Create the demo credentials (make run). Refuses unless AUTOMATION_DEMO=1."

    def handle(self, *args, **options):
        try:
            creds = demo.create_demo_credentials()
        except demo.NotInDemoMode as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:
            raise CommandError(f"Could not create demo credentials: {exc}") from None
        self.stdout.write(
            "\nDemo credentials (demo mode only):\n"
            f"  source 'demo' API key:  X-API-Key: {creds['api_key']}\n"
            f"  source '{creds['github_source']}' secret: {creds['github_secret']}"
            "  (GitHub signature, POST /webhook/demo-github)\n"
            f"  operator token:         Authorization: Bearer {creds['operator_token']}\n"
            f"  admin login:            {creds['admin_username']} / {creds['admin_password']}"
            "  (new password each start)\n"
        )
