//! The alarms' part of a batch: raising and clearing them (NOSPACE and
//! CORRUPT, per member).

use keel_api::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
};

use super::Writer;
use crate::schema::alarm_key;
use crate::MvccError;

impl Writer<'_> {
    pub(super) fn alarm(&mut self, request: &AlarmRequest) -> Result<AlarmResponse, MvccError> {
        let keyspace = &self.store.inner.keyspaces.alarms;
        let action = AlarmAction::try_from(request.action).map_err(|_| {
            MvccError::InvalidArgument(format!("unknown alarm action {}", request.action))
        })?;
        let entry = (request.member_id, request.alarm);
        let alarms = match action {
            AlarmAction::Get => self
                .state
                .alarms
                .iter()
                .filter(|&&(_, alarm)| {
                    request.alarm == AlarmType::None as i32 || alarm == request.alarm
                })
                .copied()
                .collect(),
            AlarmAction::Activate if request.alarm != AlarmType::None as i32 => {
                if self.state.alarms.insert(entry) {
                    self.batch.insert(keyspace, alarm_key(entry.0, entry.1), []);
                    vec![entry]
                } else {
                    Vec::new()
                }
            }
            AlarmAction::Activate => Vec::new(),
            AlarmAction::Deactivate => {
                if self.state.alarms.remove(&entry) {
                    self.batch.remove(keyspace, alarm_key(entry.0, entry.1));
                    vec![entry]
                } else {
                    Vec::new()
                }
            }
        };
        Ok(AlarmResponse {
            header: None,
            alarms: alarms
                .into_iter()
                .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect(),
        })
    }
}
