//! Putting jobs on the broker with publisher confirms: `publish` returns only once the
//! broker has taken responsibility for the message.

use asset_schemas::ImportJob;
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Connection};

use crate::connect::{self, QueueConfig};
use crate::consumer::publish_confirmed;
use crate::{QueueError, Topology};

pub struct Publisher {
    conn: Connection,
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    /// Connects to the first broker address that answers (one round over the list),
    /// declares the topology (so a job published before any worker started is not
    /// dropped) and enables confirms.
    pub async fn connect(cfg: &QueueConfig) -> Result<Publisher, QueueError> {
        let (conn, channel, _) = connect::open(cfg, 0).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|source| QueueError::Channel { op: "confirm.select", source })?;
        Ok(Publisher { conn, channel, topology: cfg.topology.clone() })
    }

    /// Publishes a job to the import exchange, persistent, `message_id` = job id.
    pub async fn publish(&self, job: &ImportJob) -> Result<(), QueueError> {
        let body = serde_json::to_vec(job)?;
        let props = BasicProperties::default().with_message_id(job.job_id.clone().into());
        self.publish_raw(&body, props).await
    }

    /// Publishes any bytes as a job message: for replaying captured messages, and for
    /// tests of what the consumer does with a malformed one.
    pub async fn publish_raw(&self, body: &[u8], props: BasicProperties) -> Result<(), QueueError> {
        let props = props
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type(asset_schemas::IMPORT_JOB_V1.into());
        publish_confirmed(&self.channel, &self.topology.exchange, &self.topology.routing_key, body, props)
            .await
    }

    pub async fn close(self) {
        let _ = self.channel.close(200, "done").await;
        let _ = self.conn.close(200, "done").await;
    }
}
