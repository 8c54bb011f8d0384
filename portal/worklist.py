"""The doctor's worklist: every scan of their patients with its newest report, in the order that puts what needs a
human first, filtered, sorted and paginated in the database (one query for the page, one for the count).

Priority (the default order): reports whose scan is out of the model's domain, then uncertain ones, then the other
unsigned reports by cancer probability (highest first), then analyses that failed, then signed reports, then scans
still being analysed. Filters come from the page's query string (``Filters.from_args``), so a URL keeps them.
"""

import dataclasses
import datetime as dt
import math
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from portal.models import Job, JobStatus, Report, ReportStatus, Scan, User, class_title, db

PAGE_SIZES = (25, 50, 100)
STATES = {  # query value -> label
    "unsigned": "Unsigned (draft or amendment)", "draft": "Draft", "final": "Final", "amended": "Amended",
    "pending": "Being analysed", "failed": "Analysis failed"}
FLAGS = {"ood": "Outside the model's domain", "uncertain": "Uncertain", "lesion": "Lesion found",
         "no_lesion": "No lesion found"}
ROW_STATES = {"draft": "Draft", "final": "Final", "amendment": "Amendment (draft)", "amended": "Amended",
              "pending": "Being analysed", "failed": "Failed"}  # Row.state -> what the row says
SORTS = {"priority": "Needs attention first", "date": "Upload date", "probability": "Cancer probability",
         "patient": "Patient"}

# What the priority ranks mean (lower first).
RANK_OUT_OF_DOMAIN, RANK_UNCERTAIN, RANK_UNSIGNED, RANK_FAILED, RANK_SIGNED, RANK_PENDING = range(6)


class FilterError(ValueError):
    """A worklist query string that cannot be used (shown to the doctor)."""


@dataclasses.dataclass(frozen=True)
class Filters:
    state: str = ""
    predicted_class: str = ""
    flag: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None      # inclusive
    patient_id: int | None = None
    batch_id: int | None = None
    sort: str = "priority"
    descending: bool = True             # for date, probability and patient; priority has its own order
    page: int = 1
    per_page: int = PAGE_SIZES[0]

    @classmethod
    def from_args(cls, args) -> "Filters":
        """From a request's query arguments (a MultiDict or a dict); unknown values are a FilterError."""
        def choice(name, allowed, default=""):
            value = (args.get(name) or default).strip()
            if value and value not in allowed:
                raise FilterError(f"unknown {name} {value[:40]!r}")
            return value

        def number(name, default=None, low=1):
            value = (args.get(name) or "").strip()
            if not value:
                return default
            if not value.isdigit() or int(value) < low or len(value) > 9:
                raise FilterError(f"{name} must be a whole number of at least {low}")
            return int(value)

        def day(name):
            value = (args.get(name) or "").strip()
            if not value:
                return None
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise FilterError(f"{name} must be a date (YYYY-MM-DD), not {value[:20]!r}") from None

        per_page = number("per_page", PAGE_SIZES[0])
        if per_page not in PAGE_SIZES:
            raise FilterError(f"per_page must be one of {', '.join(map(str, PAGE_SIZES))}")
        predicted_class = (args.get("class") or "").strip()[:64]
        filters = cls(state=choice("state", STATES), predicted_class=predicted_class, flag=choice("flag", FLAGS),
                      date_from=day("from"), date_to=day("to"), patient_id=number("patient"),
                      batch_id=number("batch"), sort=choice("sort", SORTS, "priority"),
                      descending=choice("order", ("asc", "desc"), "desc") == "desc", page=number("page", 1),
                      per_page=per_page)
        if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
            raise FilterError("the 'from' date is after the 'to' date")
        return filters

    def to_args(self, **changes) -> dict[str, str]:
        """The query arguments that give these filters (with ``changes``), defaults left out: short, stable URLs."""
        values = dataclasses.replace(self, **changes)
        args = {"state": values.state, "class": values.predicted_class, "flag": values.flag,
                "from": values.date_from.isoformat() if values.date_from else "",
                "to": values.date_to.isoformat() if values.date_to else "",
                "patient": str(values.patient_id or ""), "batch": str(values.batch_id or ""),
                "sort": "" if values.sort == "priority" else values.sort,
                "order": "" if values.descending else "asc",
                "page": "" if values.page == 1 else str(values.page),
                "per_page": "" if values.per_page == PAGE_SIZES[0] else str(values.per_page)}
        return {key: value for key, value in args.items() if value}

    def query_string(self, **changes) -> str:
        return urlencode(self.to_args(**changes))


@dataclasses.dataclass(frozen=True)
class Row:
    scan: Scan
    patient: User
    report: Report | None
    job: Job | None
    signer: User | None
    rank: int             # the priority rank (RANK_*), from the query

    @property
    def state(self) -> str:
        if self.report is not None:
            return self.report.state
        return "failed" if self.job is not None and self.job.status == JobStatus.FAILED.value else "pending"

    @property
    def state_label(self) -> str:
        return ROW_STATES[self.state]

    @property
    def settled(self) -> bool:
        """Nothing will change without a person: no analysis is queued or running for it."""
        return self.state != "pending"

    @property
    def flags(self) -> list[tuple[str, str]]:
        """(key, label) of what the doctor should know at a glance."""
        report, flags = self.report, []
        if report is None:
            return flags
        if report.out_of_domain:
            flags.append(("ood", "Out of domain"))
        elif report.uncertain:
            flags.append(("uncertain", "Uncertain"))
        segmentation = report.segmentation if report.lesion_count else None
        if segmentation and segmentation.lesions:
            largest = segmentation.lesions[0]
            size = (f"{largest.long_axis_mm:.1f} mm" if largest.long_axis_mm is not None
                    else f"{largest.long_axis_px:.0f} px")
            more = f" (+{report.lesion_count - 1})" if report.lesion_count > 1 else ""
            flags.append(("lesion", f"Lesion {size}{more}"))
        return flags


def _query(doctor: User, filters: Filters, columns):
    """``columns`` of the doctor's worklist under ``filters`` (no order, no paging), and the patient alias.

    Each scan's newest report version and latest job are correlated lookups (indexes (scan_id, version) and
    (scan_id, id)): the database walks the doctor's scans only, never every report and job."""
    patient, signer = aliased(User, name="patient"), aliased(User, name="signer")
    newest_version = (sa.select(sa.func.max(Report.version)).where(Report.scan_id == Scan.id)
                      .correlate(Scan).scalar_subquery())
    latest_job = sa.select(sa.func.max(Job.id)).where(Job.scan_id == Scan.id).correlate(Scan).scalar_subquery()
    query = (sa.select(*columns(patient, signer))
             .select_from(Scan)
             .join(patient, Scan.patient_id == patient.id)
             .outerjoin(Report, (Report.scan_id == Scan.id) & (Report.version == newest_version))
             .outerjoin(Job, Job.id == latest_job)
             .outerjoin(signer, Report.signed_by_id == signer.id)
             .where(patient.doctor_id == doctor.id))
    failed = Job.status == JobStatus.FAILED.value
    state = {
        "unsigned": Report.status == ReportStatus.DRAFT.value,
        "draft": (Report.status == ReportStatus.DRAFT.value) & (Report.version == 1),
        "final": Report.status == ReportStatus.FINAL.value,
        "amended": Report.version > 1,
        "pending": Report.id.is_(None) & (Job.id.is_(None) | ~failed),
        "failed": Report.id.is_(None) & failed,
    }
    in_domain = Report.in_domain.is_not(False)
    flag = {"ood": Report.in_domain.is_(False), "uncertain": Report.uncertain.is_(True) & in_domain,
            "lesion": Report.lesion_count > 0, "no_lesion": Report.lesion_count == 0}
    if filters.state:
        query = query.where(state[filters.state])
    if filters.flag:
        query = query.where(flag[filters.flag])
    if filters.predicted_class:
        query = query.where((Report.predicted_class == filters.predicted_class) & in_domain)
    if filters.date_from:
        query = query.where(Scan.created_at >= dt.datetime.combine(filters.date_from, dt.time()))
    if filters.date_to:
        query = query.where(Scan.created_at < dt.datetime.combine(filters.date_to + dt.timedelta(days=1), dt.time()))
    if filters.patient_id:
        query = query.where(Scan.patient_id == filters.patient_id)
    if filters.batch_id:
        query = query.where(Scan.id.in_(sa.select(Job.scan_id).where(Job.batch_id == filters.batch_id)))
    return query, patient


def _priority():
    failed = Job.status == JobStatus.FAILED.value
    return sa.case((Report.id.is_(None) & failed, RANK_FAILED), (Report.id.is_(None), RANK_PENDING),
                   (Report.status == ReportStatus.FINAL.value, RANK_SIGNED),
                   (Report.in_domain.is_(False), RANK_OUT_OF_DOMAIN), (Report.uncertain.is_(True), RANK_UNCERTAIN),
                   else_=RANK_UNSIGNED)


def _row_columns(patient, signer) -> tuple:
    return Scan, patient, Report, Job, signer, _priority().label("rank")


def _order(filters: Filters, patient) -> list:
    def direction(column):
        return (column.desc() if filters.descending else column.asc()).nulls_last()

    newest_first = [Scan.created_at.desc(), Scan.id.desc()]
    if filters.sort == "date":
        return [direction(Scan.created_at), direction(Scan.id)]
    if filters.sort == "probability":
        return [direction(Report.cancer_probability), *newest_first]
    if filters.sort == "patient":
        return [direction(patient.name), *newest_first]
    return [_priority(), Report.cancer_probability.desc().nulls_last(), *newest_first]


@dataclasses.dataclass(frozen=True)
class Page:
    rows: list[Row]
    total: int
    filters: Filters

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.filters.per_page))

    @property
    def first(self) -> int:
        return min(self.total, (self.filters.page - 1) * self.filters.per_page + 1)

    @property
    def last(self) -> int:
        return min(self.total, self.filters.page * self.filters.per_page)


def page(doctor: User, filters: Filters) -> Page:
    """One page of the worklist (a page past the end is empty; the count says how many there are)."""
    query, patient = _query(doctor, filters, _row_columns)
    ordered = query.order_by(*_order(filters, patient)).limit(filters.per_page).offset(
        (filters.page - 1) * filters.per_page)
    rows = [Row(*values) for values in db.session.execute(ordered).all()]
    counted, _ = _query(doctor, filters, lambda patient, signer: (sa.func.count(Scan.id),))
    return Page(rows=rows, total=db.session.scalar(counted), filters=filters)


def rows(doctor: User, scan_ids: list[int]) -> list[Row]:
    """The worklist rows of these scans (those of the doctor's patients only), for live updates."""
    if not scan_ids:
        return []
    query, _ = _query(doctor, Filters(), _row_columns)
    return [Row(*values) for values in db.session.execute(query.where(Scan.id.in_(scan_ids))).all()]


def neighbours(doctor: User, filters: Filters, scan_id: int) -> tuple[int | None, int | None]:
    """The reports before and after ``scan_id``'s in the worklist under ``filters`` (scans with a report only):
    (previous report id, next report id), None at either end or when the scan is not in the list."""
    query, patient = _query(doctor, filters, lambda patient, signer: (Scan.id, Report.id))
    ordered = query.where(Report.id.is_not(None)).order_by(*_order(filters, patient))
    listed = db.session.execute(ordered).all()
    for index, (listed_scan, _) in enumerate(listed):
        if listed_scan == scan_id:
            previous = listed[index - 1][1] if index > 0 else None
            following = listed[index + 1][1] if index + 1 < len(listed) else None
            return previous, following
    return None, None


def classes(doctor: User) -> list[tuple[str, str]]:
    """(class name, display name) of the classes the doctor's reports predict, for the filter."""
    query, _ = _query(doctor, Filters(), lambda patient, signer: (Report.predicted_class, Report.class_titles_json))
    found = {}
    for name, titles_json in db.session.execute(query.where(Report.id.is_not(None)).distinct()).all():
        found.setdefault(name, class_title(name, titles_json))
    return sorted(found.items(), key=lambda item: item[1])
