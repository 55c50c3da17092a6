"""placeholder"""

from aiohttp import web


def setup_routes(app: web.Application) -> None:
    pass
