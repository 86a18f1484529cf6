"""The results layer's look: one colour per class (ordered by class_id), optional labels."""

from __future__ import annotations

from qgis.core import QgsFeature, QgsVectorLayer

from qgis_unravel.engine.style import class_colour
from qgis_unravel.plugin import results, styling


def detections(rows: list[tuple[int, str, float]]) -> QgsVectorLayer:
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633&field=class_id:integer&field=class_name:string"
                           "&field=score:double", "found", "memory")
    features = []
    for row in rows:
        feature = QgsFeature(layer.fields())
        feature.setAttributes(list(row))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def test_categories_follow_class_ids_with_the_engine_colours():
    layer = detections([(6, "ship", 0.9), (0, "plane", 0.8), (6, "ship", 0.5)])
    styling.apply_class_style(layer)
    renderer = layer.renderer()
    assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "class_name"
    categories = renderer.categories()  # keep the copies alive while their symbols are read
    values = [category.value() for category in categories]
    assert values[0] == "plane" and values[6] == "ship"
    symbol = categories[6].symbol()
    ship = symbol.symbolLayer(0).strokeColor()
    assert (ship.red(), ship.green(), ship.blue()) == class_colour(6)


def test_known_class_list_gives_every_class_a_category():
    layer = detections([(1, "ship", 0.9)])
    styling.apply_class_style(layer, ["plane", "ship", "harbor"])
    assert [c.value() for c in layer.renderer().categories()] == ["plane", "ship", "harbor"]


def test_labels_are_optional():
    layer = detections([(0, "plane", 0.8)])
    styling.apply_labels(layer, True)
    assert layer.labelsEnabled() and "class_name" in layer.labeling().settings().fieldName
    styling.apply_labels(layer, False)
    assert not layer.labelsEnabled()


def test_partial_results_are_named_so():
    assert results.display_name("ships", True) == "ships (partial)"
    assert results.display_name("ships", False) == "ships"


def test_result_layers_are_recognised_by_their_fields():
    assert results.is_result_layer(detections([]))
    assert not results.is_result_layer(QgsVectorLayer("Point?field=name:string", "other", "memory"))


def test_a_checkpoint_files_legend_uses_the_class_names_the_worker_reported(tmp_path):
    """A checkpoint chosen by path has no card: the worker's result names its classes, so the
    legend reads "ship", never a placeholder like "class 0"."""
    from qgis.core import QgsVectorFileWriter

    source = detections([(1, "ship", 0.9)])
    path = tmp_path / "found.gpkg"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "detections"
    QgsVectorFileWriter.writeAsVectorFormatV2(source, str(path), source.transformContext(), options)
    result = {"output": str(path), "layer": "detections", "partial": False,
              "classes": ["plane", "ship", "storage-tank"]}
    layer = results.build_layer(result, True, "ships.pth – scene", [], known_classes=[])
    labels = [category.label() for category in layer.renderer().categories()]
    assert labels == ["plane", "ship", "storage-tank"]
    assert not [label for label in labels if label.startswith("class ")]
    assert results.model_classes({"classes": None}, ["a"]) == ["a"]  # an older worker: the card
