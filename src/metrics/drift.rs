//! Drift monitoring's series: per feature of each monitored tensor, the last closed window's
//! scores against the version's reference; per version, rows scored and the drifting share.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

pub const DRIFT_PSI: &str = "drift_psi";
pub const DRIFT_JS_DISTANCE: &str = "drift_js_distance";
pub const DRIFT_P_VALUE: &str = "drift_p_value";
pub const DRIFT_SAMPLES: &str = "drift_samples";
pub const DRIFT_DRIFTING_SHARE: &str = "drift_drifting_features_share";
pub const DRIFT_WINDOWS: &str = "drift_windows_total";

pub struct DriftMetrics {
    /// model, version, tensor, feature.
    pub psi: GaugeVec,
    pub js_distance: GaugeVec,
    pub p_value: GaugeVec,
    /// model, version: rows in the last closed window.
    pub samples: IntGaugeVec,
    pub drifting_share: GaugeVec,
    pub windows: IntCounterVec,
}

impl DriftMetrics {
    pub(super) fn new(registry: &Registry) -> Result<DriftMetrics, prometheus::Error> {
        let f = ["model", "version", "tensor", "feature"];
        let mv = ["model", "version"];
        let m = DriftMetrics {
            psi: GaugeVec::new(
                Opts::new(DRIFT_PSI, "Population stability index of the last closed window against the reference."),
                &f,
            )?,
            js_distance: GaugeVec::new(
                Opts::new(DRIFT_JS_DISTANCE, "Jensen-Shannon distance (base 2) of the last closed window against the reference."),
                &f,
            )?,
            p_value: GaugeVec::new(
                Opts::new(DRIFT_P_VALUE, "Chi-square p-value of the last closed window (absent when an expected count is under 5)."),
                &f,
            )?,
            samples: IntGaugeVec::new(
                Opts::new(DRIFT_SAMPLES, "Rows binned in the last closed drift window."),
                &mv,
            )?,
            drifting_share: GaugeVec::new(
                Opts::new(DRIFT_DRIFTING_SHARE, "Share of the version's monitored features drifting in the last closed window."),
                &mv,
            )?,
            windows: IntCounterVec::new(
                Opts::new(DRIFT_WINDOWS, "Drift windows closed and scored."),
                &mv,
            )?,
        };
        registry.register(Box::new(m.psi.clone()))?;
        registry.register(Box::new(m.js_distance.clone()))?;
        registry.register(Box::new(m.p_value.clone()))?;
        registry.register(Box::new(m.samples.clone()))?;
        registry.register(Box::new(m.drifting_share.clone()))?;
        registry.register(Box::new(m.windows.clone()))?;
        Ok(m)
    }
}
