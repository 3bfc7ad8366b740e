"""CSV schemas of the three RSNA challenges the Normal Guidance paper evaluates on.

One place for the file names and columns that both the phantom writer (:mod:`monai_ng.data.phantom`) and the
dataset adapters (``preprocessing.rsna_ich``, ``preprocessing.rsna_pe``, ``preprocessing.rsna_abdominal``) rely on:

* RSNA Intracranial Hemorrhage Detection 2019 (Flanders et al., Radiology: AI 2020, doi:10.1148/ryai.2020190211):
  ``stage_2_train.csv`` with columns ``ID, Label`` and one row per image and subtype (``ID_<hex>_<subtype>``).
* RSNA STR Pulmonary Embolism Detection 2020 (Colak et al., Radiology: AI 2021, doi:10.1148/ryai.2021200254):
  ``train.csv`` with one row per image (``PE_COLUMNS``); exam-level columns repeat on every image of an exam.
* RSNA Abdominal Trauma Detection 2023: ``train.csv`` (one row per patient, ``ABDOMINAL_TRAIN_COLUMNS``),
  ``image_level_labels.csv`` (``ABDOMINAL_IMAGE_COLUMNS``) and ``train_series_meta.csv``
  (``ABDOMINAL_SERIES_COLUMNS``).
"""

from __future__ import annotations

__all__ = [
    "ABDOMINAL_IMAGE_COLUMNS",
    "ABDOMINAL_IMAGE_CSV",
    "ABDOMINAL_SERIES_COLUMNS",
    "ABDOMINAL_SERIES_CSV",
    "ABDOMINAL_TRAIN_COLUMNS",
    "ABDOMINAL_TRAIN_CSV",
    "ICH_COLUMNS",
    "ICH_CSV",
    "ICH_SUBTYPES",
    "PE_COLUMNS",
    "PE_CSV",
    "PE_REQUIRED_COLUMNS",
]

ICH_CSV = "stage_2_train.csv"
ICH_COLUMNS = ("ID", "Label")
# the last subtype, ``any``, is 1 when any of the five hemorrhage subtypes is
ICH_SUBTYPES = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")

PE_CSV = "train.csv"
PE_COLUMNS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "pe_present_on_image",
    "negative_exam_for_pe",
    "qa_motion",
    "qa_contrast",
    "flow_artifact",
    "rv_lv_ratio_gte_1",
    "rv_lv_ratio_lt_1",
    "leftsided_pe",
    "chronic_pe",
    "true_filling_defect_not_pe",
    "rightsided_pe",
    "acute_and_chronic_pe",
    "central_pe",
    "indeterminate",
)
# the columns an adapter needs: the three UIDs, the slice label and the exam label
PE_REQUIRED_COLUMNS = PE_COLUMNS[:5]

ABDOMINAL_TRAIN_CSV = "train.csv"
ABDOMINAL_IMAGE_CSV = "image_level_labels.csv"
ABDOMINAL_SERIES_CSV = "train_series_meta.csv"
ABDOMINAL_TRAIN_COLUMNS = (
    "patient_id",
    "bowel_healthy",
    "bowel_injury",
    "extravasation_healthy",
    "extravasation_injury",
    "kidney_healthy",
    "kidney_low",
    "kidney_high",
    "liver_healthy",
    "liver_low",
    "liver_high",
    "spleen_healthy",
    "spleen_low",
    "spleen_high",
    "any_injury",
)
ABDOMINAL_IMAGE_COLUMNS = ("patient_id", "series_id", "instance_number", "injury_name")
ABDOMINAL_SERIES_COLUMNS = ("patient_id", "series_id", "aortic_hu", "incomplete_organ")
