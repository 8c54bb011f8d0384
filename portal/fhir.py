"""FHIR R4 export: a report version as a DiagnosticReport with its probabilities and the segmenter's lesion
measurements as contained Observations.

References to the patient and the signing doctor are relative (``Patient/<id>``, ``Practitioner/<id>``) in
RadAssist's own identifier space; the PDF rides along as ``presentedForm``.
"""

import base64
import datetime as dt

from portal.models import Report
from portal.reports import NOT_ANALYSED, NOTICE, ood_explanation
from portal.storage import BlobStore

CLASS_SYSTEM = "https://radassist.org/fhir/CodeSystem/chest-ct-class"
FLAG_SYSTEM = "https://radassist.org/fhir/CodeSystem/model-flag"
OOD_SCORE_CODE = "ood-score"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REPORT_ID_SYSTEM = "https://radassist.org/fhir/report-id"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
# SNOMED CT, as DICOM's measurement templates use them (TID 1410, CID 7470/7472).
NODULE = {"system": SNOMED, "code": "27925004", "display": "Nodule"}
LUNG = {"system": SNOMED, "code": "39607008", "display": "Lung structure"}
LONG_AXIS = {"system": SNOMED, "code": "103339001", "display": "Long axis"}
SHORT_AXIS = {"system": SNOMED, "code": "103340004", "display": "Short axis"}
AREA = {"system": SNOMED, "code": "42798000", "display": "Area"}
IMAGING = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging",
           "display": "Imaging"}
PIXELS = {"unit": "pixel", "system": UCUM, "code": "{pixel}"}


def _quantity(value: float, unit: str) -> dict:
    """A UCUM quantity: mm, mm2, or pixels (an annotation unit: the scan stated no pixel spacing)."""
    if unit == "px":
        return {"value": round(value, 2), **PIXELS}
    return {"value": round(value, 2), "unit": unit, "system": UCUM, "code": unit}


def lesion_observations(report: Report, subject: dict, status: str) -> list[dict]:
    """One Observation per lesion the segmenter found (body site: lung), its long and short axis and area as
    components in mm and mm2 (pixels when the scan's spacing is unknown); one "no nodule found" Observation when
    it found none; nothing when the report has no segmentation."""
    result = report.segmentation
    if result is None or not result.available:
        return []
    base = {"resourceType": "Observation", "status": status, "category": [{"coding": [IMAGING]}],
            "subject": subject, "bodySite": {"coding": [LUNG]}, "device": {"reference": "#segmenter"}}
    if not result.lesion_count:
        return [{**base, "id": "lesions", "code": {"coding": [NODULE], "text": "Lung nodule (segmentation model)"},
                 "valueString": "No nodule found on this slice"}]
    observations = []
    for lesion in result.lesions:
        if result.in_mm:
            sizes = ((LONG_AXIS, lesion.long_axis_mm, "mm"), (SHORT_AXIS, lesion.short_axis_mm, "mm"),
                     (AREA, lesion.area_mm2, "mm2"))
        else:
            sizes = ((LONG_AXIS, lesion.long_axis_px, "px"), (SHORT_AXIS, lesion.short_axis_px, "px"),
                     (AREA, lesion.area_px, "px"))
        observations.append({
            **base, "id": f"lesion-{lesion.number}",
            "code": {"coding": [NODULE], "text": f"Lung nodule {lesion.number} (segmentation model)"},
            "component": [{"code": {"coding": [code]}, "valueQuantity": _quantity(value, unit)}
                          for code, value, unit in sizes],
            "note": [{"text": f"Centre at x {lesion.centroid[1]:.0f}, y {lesion.centroid[0]:.0f} px of the slice; "
                              f"mean probability {lesion.mean_probability:.2f}"
                              + ("" if result.in_mm else "; sizes in pixels: the scan states no pixel spacing")}],
        })
    return observations


def _instant(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=dt.UTC, microsecond=0).isoformat()


def report_status(report: Report) -> str:
    if not report.is_final:
        return "preliminary"
    return "amended" if report.supersedes_id else "final"


def diagnostic_report(report: Report, store: BlobStore | None = None) -> dict:
    scan, patient = report.scan, report.scan.patient
    subject = {"reference": f"Patient/{patient.id}", "display": patient.name}
    observation_status = "final" if report.is_final else "preliminary"
    observations = [{
        "resourceType": "Observation",
        "id": f"probability-{index}",
        "status": observation_status,
        "code": {"coding": [{"system": CLASS_SYSTEM, "code": name, "display": report.class_title(name)}],
                 "text": f"Model probability of {report.class_title(name).lower()}"},
        "subject": subject,
        "device": {"reference": "#model"},
        "valueQuantity": {"value": round(report.probabilities[name], 6), "unit": "probability",
                          "system": "http://unitsofmeasure.org", "code": "1"},
    } for index, name in enumerate(report.probabilities)]
    if report.out_of_domain:
        # The probabilities are raw output, not a result: HL7's "indeterminate" interpretation on each.
        indeterminate = [{"coding": [{"system": INTERPRETATION_SYSTEM, "code": "IND", "display": "Indeterminate"}],
                          "text": f"Not analysed: {ood_explanation(report.ood_reason)}"}]
        for observation in observations:
            observation["interpretation"] = indeterminate
    if report.ood_score is not None:
        observations.append({
            "resourceType": "Observation", "id": OOD_SCORE_CODE, "status": observation_status,
            "code": {"coding": [{"system": FLAG_SYSTEM, "code": OOD_SCORE_CODE,
                                 "display": "Out-of-distribution score (1.0 = the model's limit)"}]},
            "subject": subject, "device": {"reference": "#model"},
            "valueQuantity": {"value": report.ood_score, "unit": "ratio", "system": "http://unitsofmeasure.org",
                              "code": "1"},
            "interpretation": [{"coding": [{"system": INTERPRETATION_SYSTEM,
                                            "code": "H" if report.out_of_domain else "N",
                                            "display": "High" if report.out_of_domain else "Normal"}]}],
        })
    device = {"resourceType": "Device", "id": "model",
              "deviceName": [{"name": report.model_name, "type": "model-name"}],
              "version": [{"value": str(report.model_version)}]}
    devices = [device]
    lesions = lesion_observations(report, subject, observation_status)
    if lesions:
        result = report.segmentation
        devices.append({"resourceType": "Device", "id": "segmenter",
                        "deviceName": [{"name": result.model_name, "type": "model-name"}],
                        "version": [{"value": str(result.model_version)}]})
        observations.extend(lesions)
    if report.out_of_domain:
        conclusion = [f"{NOT_ANALYSED}: {ood_explanation(report.ood_reason)}. No model classification."]
        conclusion_code = [{"coding": [{"system": FLAG_SYSTEM, "code": "out-of-domain", "display": NOT_ANALYSED}]}]
    else:
        conclusion = [f"Model prediction: {report.class_title(report.predicted_class)} ({report.confidence:.0%})."]
        conclusion_code = [{"coding": [{"system": CLASS_SYSTEM, "code": report.predicted_class,
                                        "display": report.class_title(report.predicted_class)}]}]
    if report.uncertain and not report.out_of_domain:
        conclusion.append("Uncertain: low model confidence, needs review.")
        conclusion_code.append({"coding": [{"system": FLAG_SYSTEM, "code": "uncertain",
                                            "display": "Uncertain, needs review"}]})
    if scan.self_submitted and not report.is_final:
        conclusion.append("Submitted by the patient; not yet reviewed.")
    if report.segmentation is not None:
        conclusion.append(f"Nodule segmentation: {report.segmentation.summary}.")
    if report.findings:
        conclusion.append(f"Findings: {report.findings}")
    conclusion.append(NOTICE)
    document = {
        "resourceType": "DiagnosticReport",
        "id": f"report-{report.id}",
        "meta": {"lastUpdated": _instant(report.signed_at or report.created_at)},
        "identifier": [{"system": REPORT_ID_SYSTEM, "value": f"{report.scan_id}-{report.version}"}],
        "contained": [*devices, *observations],
        "status": report_status(report),
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "CT Chest"}],
                 "text": "Chest CT slice: lung cancer classification (decision support)"},
        "subject": subject,
        "effectiveDateTime": _instant(scan.created_at),
        "issued": _instant(report.signed_at or report.created_at),
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": " ".join(conclusion),
        "conclusionCode": conclusion_code,
    }
    if report.is_final and report.signed_by_id:
        doctor = {"reference": f"Practitioner/{report.signed_by_id}", "display": report.signed_by.name}
        document["performer"] = [doctor]
        document["resultsInterpreter"] = [doctor]
    if store is not None and report.pdf_sha256:
        document["presentedForm"] = [{
            "contentType": "application/pdf", "title": f"RadAssist report {report.id} version {report.version}",
            "data": base64.b64encode(store.get(report.pdf_sha256)).decode("ascii"),
            "creation": _instant(report.signed_at or report.created_at)}]
    return document
