//! The Python module `podyn_fast._core`: the only place that touches PyO3.
//!
//! Calls that read bodies release the GIL for the whole body and build Python objects only for
//! the results (one `bytes` of rows per call, never one object per item).

use std::fs::File;
use std::os::fd::BorrowedFd;

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyTuple};

use crate::encoder::{Encoded, Encoder};
use crate::error::CoreError;
use crate::export::ExportLines;
use crate::ident;
use crate::layout::{self, Column, Layout, Mode};
use crate::pgcopy;
use crate::types::{ColumnType, DynType};

pyo3::import_exception!(podyn_fast.errors, BodyError);
pyo3::import_exception!(podyn_fast.errors, DynamoServiceError);
pyo3::import_exception!(podyn_fast.errors, LayoutError);

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        match e {
            CoreError::BadBody { .. } | CoreError::BadGzip { .. } => BodyError::new_err(e.to_string()),
            CoreError::ServiceError { code, message } => DynamoServiceError::new_err((code, message)),
            CoreError::BadLayout(_) => LayoutError::new_err(e.to_string()),
        }
    }
}

fn dyn_type(tag: &str) -> PyResult<DynType> {
    DynType::from_tag(tag.as_bytes()).ok_or_else(|| LayoutError::new_err(format!("unknown DynamoDB type {tag:?}")))
}

fn column_type_of(sql: &str) -> PyResult<ColumnType> {
    ColumnType::from_sql(sql).ok_or_else(|| LayoutError::new_err(format!("unsupported column type {sql:?}")))
}

fn columns_from(columns: Vec<(String, String, String)>) -> PyResult<Vec<Column>> {
    columns.into_iter().map(|(attribute, ty, name)| Ok(Column { attribute, ty: column_type_of(&ty)?, name })).collect()
}

fn columns_to(columns: &[Column]) -> Vec<(String, String, String)> {
    columns.iter().map(|c| (c.attribute.clone(), c.ty.sql().to_owned(), c.name.clone())).collect()
}

/// A table layout (see `_core.pyi` for the Python-facing documentation).
#[pyclass(frozen, name = "Layout", module = "podyn_fast._core")]
pub struct PyLayout {
    inner: Layout,
}

#[pymethods]
impl PyLayout {
    #[new]
    #[pyo3(signature = (keys, columns, *, mode = "columns", document = None, lower_case = false))]
    fn new(
        keys: Vec<(String, String)>,
        columns: Vec<(String, String, String)>,
        mode: &str,
        document: Option<String>,
        lower_case: bool,
    ) -> PyResult<Self> {
        let mode = match mode {
            "columns" => Mode::Columns,
            "jsonb" => Mode::Jsonb,
            other => return Err(LayoutError::new_err(format!("mode must be 'columns' or 'jsonb', not {other:?}"))),
        };
        let keys = keys.into_iter().map(|(n, t)| Ok((n, dyn_type(&t)?))).collect::<PyResult<Vec<_>>>()?;
        let inner = Layout::new(mode, keys, columns_from(columns)?, document, lower_case)?;
        Ok(PyLayout { inner })
    }

    #[getter]
    fn mode(&self) -> &'static str {
        match self.inner.mode {
            Mode::Columns => "columns",
            Mode::Jsonb => "jsonb",
        }
    }

    #[getter]
    fn keys(&self) -> Vec<(String, &'static str)> {
        self.inner.keys.iter().map(|(n, t)| (n.clone(), t.tag())).collect()
    }

    #[getter]
    fn columns(&self) -> Vec<(String, String, String)> {
        columns_to(&self.inner.columns)
    }

    #[getter]
    fn document(&self) -> Option<String> {
        self.inner.document.clone()
    }

    #[getter]
    fn lower_case(&self) -> bool {
        self.inner.lower_case
    }

    #[getter]
    fn column_names(&self) -> Vec<&str> {
        self.inner.column_names()
    }

    fn plan_columns(&self, new: Vec<(String, String)>) -> PyResult<Vec<(String, String, String)>> {
        let new = new.into_iter().map(|(a, t)| Ok((a, column_type_of(&t)?))).collect::<PyResult<Vec<_>>>()?;
        Ok(columns_to(&self.inner.plan_columns(&new)))
    }

    #[pyo3(signature = (added, *, document = None))]
    fn with_columns(&self, added: Vec<(String, String, String)>, document: Option<String>) -> PyResult<Self> {
        let mut columns = self.inner.columns.clone();
        columns.extend(columns_from(added)?);
        let l = &self.inner;
        let inner =
            Layout::new(l.mode, l.keys.clone(), columns, document.or_else(|| l.document.clone()), l.lower_case)?;
        Ok(PyLayout { inner })
    }

    fn encode_scan_page(&self, py: Python<'_>, body: &[u8]) -> PyResult<PyEncoded> {
        let buffer = ROWS.take();
        let page = py.detach(|| Encoder::with_buffer(&self.inner, buffer).scan_page(body))?;
        let mut out = PyEncoded::from_core(py, page.encoded)?;
        out.count = page.count;
        out.scanned_count = page.scanned_count;
        out.last_evaluated_key = page.last_evaluated_key.map(|k| PyBytes::new(py, &k).unbind());
        out.consumed_capacity = page.consumed_capacity;
        Ok(out)
    }

    fn encode_item(&self, py: Python<'_>, item: &[u8]) -> PyResult<PyEncoded> {
        let buffer = ROWS.take();
        let encoded = py.detach(|| Encoder::with_buffer(&self.inner, buffer).item(item))?;
        PyEncoded::from_core(py, encoded)
    }

    fn encode_export_lines(&self, py: Python<'_>, body: &[u8]) -> PyResult<PyEncoded> {
        let buffer = ROWS.take();
        let encoded = py.detach(|| Encoder::with_buffer(&self.inner, buffer).export_lines(body))?;
        PyEncoded::from_core(py, encoded)
    }

    /// GetRecords bodies, in their order, collapsed per key into one batch.
    #[allow(clippy::needless_pass_by_value)] // PyO3 hands a list over as an owned Vec
    fn encode_records(&self, py: Python<'_>, bodies: Vec<PyBackedBytes>) -> PyResult<PyStreamBatch> {
        let buffer = ROWS.take();
        let slices: Vec<&[u8]> = bodies.iter().map(|b| &b[..]).collect();
        let batch = py.detach(|| Encoder::with_buffer(&self.inner, buffer).records(&slices))?;
        let fetch: Vec<Bound<'_, PyBytes>> = batch.fetch.iter().map(|k| PyBytes::new(py, k)).collect();
        Ok(PyStreamBatch {
            upserts: Py::new(py, PyEncoded::from_core(py, batch.upserts)?)?,
            deletes: PyBytes::new(py, &batch.deletes).unbind(),
            delete_count: batch.delete_count,
            fetch: PyTuple::new(py, fetch)?.unbind(),
            records: batch.records,
        })
    }

    /// Binary COPY rows of this layout as text COPY rows (for the dry run's psql script).
    fn copy_text<'py>(&self, py: Python<'py>, rows: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let types: Vec<ColumnType> = self
            .inner
            .columns
            .iter()
            .map(|c| c.ty)
            .chain(self.inner.document.as_ref().map(|_| ColumnType::Jsonb))
            .collect();
        let mut out = Vec::with_capacity(rows.len() + rows.len() / 2);
        py.detach(|| crate::pgtext::rows_to_text(rows, &types, &mut out))?;
        Ok(PyBytes::new(py, &out))
    }

    fn __repr__(&self) -> String {
        format!("Layout(mode={:?}, columns={:?})", self.mode(), self.inner.column_names())
    }
}

/// One item that could not be represented.
#[pyclass(frozen, name = "Reject", module = "podyn_fast._core")]
pub struct PyReject {
    #[pyo3(get)]
    key: Py<PyBytes>,
    #[pyo3(get)]
    item: Py<PyBytes>,
    #[pyo3(get)]
    reason: String,
}

#[pymethods]
impl PyReject {
    fn __repr__(&self) -> String {
        format!("Reject(reason={:?})", self.reason)
    }
}

/// The result of encoding a Scan page or an item.
#[pyclass(frozen, name = "Encoded", module = "podyn_fast._core")]
pub struct PyEncoded {
    #[pyo3(get)]
    rows: Py<PyBytes>,
    #[pyo3(get)]
    row_count: u64,
    #[pyo3(get)]
    item_count: u64,
    #[pyo3(get)]
    unknown: Py<PyTuple>,
    #[pyo3(get)]
    rejects: Py<PyTuple>,
    #[pyo3(get)]
    count: Option<u64>,
    #[pyo3(get)]
    scanned_count: Option<u64>,
    #[pyo3(get)]
    last_evaluated_key: Option<Py<PyBytes>>,
    #[pyo3(get)]
    consumed_capacity: Option<f64>,
}

thread_local! {
    /// The row buffer of the last call on this thread, reused by the next one: a page's rows are
    /// a megabyte or so, and fresh memory for each page costs page faults.
    static ROWS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Buffers larger than this are not kept between calls (one huge item should not pin memory).
const KEEP_ROWS_BUFFER: usize = 16 << 20;

impl PyEncoded {
    /// Wrap a core result; the rows are copied into one `bytes` and their buffer kept for reuse.
    ///
    /// Every failure (a Python object that cannot be made) is raised: an `Encoded` that silently
    /// lacked a reject or an unknown attribute would let a worker checkpoint rows never written.
    fn from_core(py: Python<'_>, e: Encoded) -> PyResult<Self> {
        let unknown: Vec<(String, &str)> = e.unknown.into_iter().map(|(n, t)| (n, t.sql())).collect();
        let rejects = e
            .rejects
            .into_iter()
            .map(|r| {
                let reject = PyReject {
                    key: PyBytes::new(py, &r.key).unbind(),
                    item: PyBytes::new(py, &r.item).unbind(),
                    reason: r.reason,
                };
                Py::new(py, reject)
            })
            .collect::<PyResult<Vec<Py<PyReject>>>>()?;
        let rows = PyBytes::new(py, &e.rows).unbind();
        if e.rows.capacity() <= KEEP_ROWS_BUFFER {
            ROWS.set(e.rows);
        }
        Ok(PyEncoded {
            rows,
            row_count: e.row_count,
            item_count: e.item_count,
            unknown: PyTuple::new(py, unknown)?.unbind(),
            rejects: PyTuple::new(py, rejects)?.unbind(),
            count: None,
            scanned_count: None,
            last_evaluated_key: None,
            consumed_capacity: None,
        })
    }
}

#[pymethods]
impl PyEncoded {
    fn __repr__(&self) -> String {
        format!("Encoded(row_count={}, item_count={})", self.row_count, self.item_count)
    }
}

/// GetRecords responses of one transaction, collapsed per key.
#[pyclass(frozen, name = "StreamBatch", module = "podyn_fast._core")]
pub struct PyStreamBatch {
    #[pyo3(get)]
    upserts: Py<PyEncoded>,
    #[pyo3(get)]
    deletes: Py<PyBytes>,
    #[pyo3(get)]
    delete_count: u64,
    #[pyo3(get)]
    fetch: Py<PyTuple>,
    #[pyo3(get)]
    records: u64,
}

#[pymethods]
impl PyStreamBatch {
    fn __repr__(&self) -> String {
        format!("StreamBatch(records={}, deletes={})", self.records, self.delete_count)
    }
}

/// Where one GetRecords response leaves its shard.
#[pyclass(frozen, name = "StreamPosition", module = "podyn_fast._core")]
pub struct PyStreamPosition {
    #[pyo3(get)]
    records: u64,
    #[pyo3(get)]
    last_sequence_number: Option<String>,
    #[pyo3(get)]
    last_created: Option<f64>,
    #[pyo3(get)]
    next_shard_iterator: Option<String>,
}

#[pymethods]
impl PyStreamPosition {
    fn __repr__(&self) -> String {
        format!("StreamPosition(records={}, last_sequence_number={:?})", self.records, self.last_sequence_number)
    }
}

/// Read a GetRecords response for where it leaves its shard, without encoding its images.
#[pyfunction]
fn stream_position(py: Python<'_>, body: &[u8]) -> PyResult<PyStreamPosition> {
    let p = py.detach(|| crate::stream_position(body))?;
    Ok(PyStreamPosition {
        records: p.records,
        last_sequence_number: p.last_sequence_number,
        last_created: p.last_created,
        next_shard_iterator: p.next_shard_iterator,
    })
}

/// An export data file's lines, inflated a chunk at a time without the GIL.
#[pyclass(name = "ExportLines", module = "podyn_fast._core")]
pub struct PyExportLines {
    inner: ExportLines<File>,
}

#[pymethods]
impl PyExportLines {
    #[new]
    #[pyo3(signature = (fd, *, skip = 0, chunk = 4 << 20))]
    fn new(fd: i32, skip: u64, chunk: usize) -> PyResult<Self> {
        // SAFETY: the descriptor is only borrowed to be duplicated at once; a closed one fails.
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        Ok(PyExportLines { inner: ExportLines::new(File::from(owned), skip, chunk) })
    }

    fn next_chunk<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let chunk = py.detach(|| self.inner.next_chunk())?;
        Ok(chunk.map(|c| PyBytes::new(py, &c)))
    }
}

/// Quote an identifier (always quoted, quotes doubled).
#[pyfunction]
fn quote_ident(name: &str) -> PyResult<String> {
    Ok(layout::quoted(name)?)
}

/// Fit a name in PostgreSQL's 63 bytes (cut at a character boundary, plus a short hash).
#[pyfunction]
fn fit_ident(name: &str) -> String {
    ident::fit(name)
}

/// The column type of a DynamoDB type (`None` for NULL).
#[pyfunction]
fn column_type(dynamo_type: &str) -> PyResult<Option<&'static str>> {
    Ok(dyn_type(dynamo_type)?.column_type().map(ColumnType::sql))
}

/// Key columns for a key schema: [(attribute, column type, column name)].
#[pyfunction]
#[pyo3(signature = (keys, *, lower_case = false))]
fn key_columns(keys: Vec<(String, String)>, lower_case: bool) -> PyResult<Vec<(String, String, String)>> {
    let keys = keys.into_iter().map(|(n, t)| Ok((n, dyn_type(&t)?))).collect::<PyResult<Vec<_>>>()?;
    Ok(columns_to(&layout::key_columns(&keys, lower_case)))
}

/// CRC32 (IEEE, as zlib's and DynamoDB's `x-amz-crc32`) of a response body, without the GIL.
#[pyfunction]
fn crc32(py: Python<'_>, data: &[u8]) -> u32 {
    py.detach(|| crc32fast::hash(data))
}

#[pymodule]
pub fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("COPY_HEADER", PyBytes::new(m.py(), pgcopy::HEADER))?;
    m.add("COPY_TRAILER", PyBytes::new(m.py(), pgcopy::TRAILER))?;
    m.add_class::<PyLayout>()?;
    m.add_class::<PyEncoded>()?;
    m.add_class::<PyReject>()?;
    m.add_class::<PyStreamBatch>()?;
    m.add_class::<PyStreamPosition>()?;
    m.add_function(wrap_pyfunction!(stream_position, m)?)?;
    m.add_class::<PyExportLines>()?;
    m.add_function(wrap_pyfunction!(quote_ident, m)?)?;
    m.add_function(wrap_pyfunction!(fit_ident, m)?)?;
    m.add_function(wrap_pyfunction!(column_type, m)?)?;
    m.add_function(wrap_pyfunction!(key_columns, m)?)?;
    m.add_function(wrap_pyfunction!(crc32, m)?)?;
    Ok(())
}
