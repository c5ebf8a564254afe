"""Query parameters shared by list endpoints."""

from typing import Annotated

from litestar.params import Parameter

PageSize = Annotated[int, Parameter(query="page_size", ge=1, le=100, description="1 to 100")]
PageToken = Annotated[
    str, Parameter(query="page_token", max_length=512, description="next_page_token of the previous page")
]
