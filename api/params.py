"""Query parameters shared by list endpoints."""

from typing import Annotated

from litestar.params import QueryParameter

PageSize = Annotated[int, QueryParameter(name="page_size", ge=1, le=100, description="1 to 100")]
PageToken = Annotated[
    str, QueryParameter(name="page_token", max_length=512, description="next_page_token of the previous page")
]
