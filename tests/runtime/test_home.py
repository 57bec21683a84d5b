"""GET / for people, and the API docs served without any CDN."""

import re

import pytest

pytestmark = pytest.mark.django_db


def test_the_home_page_links_to_where_people_go_next(client):
    page = client.get("/")

    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    links = dict(re.findall(r'<a href="([^"]+)">([^<]+)</a>', page.content.decode()))
    assert links == {
        "/admin/": "Admin console",
        "/health": "/health",
        "/ready": "/ready",
        "/api/docs/": "API docs",
        "/api/schema/": "OpenAPI schema",
    }
    for href in links:
        assert client.get(href).status_code in (200, 302), href  # the admin: to its login


def test_the_admins_view_site_link_lands_on_the_home_page(admin_client):
    index = admin_client.get("/admin/").content.decode()

    assert re.search(r'<a href="/"[^>]*>\s*View site\s*</a>', index)


def test_the_api_docs_load_swagger_ui_from_this_server(client):
    page = client.get("/api/docs/").content.decode()

    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert any("swagger-ui" in a for a in assets), page[:500]
    assert "cdn.jsdelivr" not in page and "unpkg" not in page
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
