// PLACEHOLDER (to be replaced by the simulated-engine module being written).
use crate::domain::types::TaskType;
pub struct SimOutput {
    pub result: serde_json::Value,
    pub extra_credits: u32,
}
pub fn simulate(_t: TaskType, _p: &serde_json::Value) -> SimOutput {
    SimOutput {
        result: serde_json::json!({"simulated": true}),
        extra_credits: 0,
    }
}
pub fn unit_interval(_s: &str, _a: u32) -> f64 {
    0.5
}
