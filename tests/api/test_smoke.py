from tests.factories import Api


async def test_register_and_create(api: Api) -> None:
    jake = await api.register("jake")
    article = await api.article(jake, tagList=["training", "dragons"])
    assert article["tagList"] == ["dragons", "training"]
