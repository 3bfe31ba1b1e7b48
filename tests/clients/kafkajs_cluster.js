// kafkajs against a replicated topic: produce numbered records one by one (acks=all, idempotent)
// while the test kills brokers, or read a topic back through a consumer group.
// Usage: node kafkajs_cluster.js produce BROKERS TOPIC FIRST COUNT   -> prints the number acknowledged
//        node kafkajs_cluster.js consume BROKERS TOPIC COUNT         -> prints the distinct values read
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [mode, brokers, topic, ...rest] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'moldau-cluster-test', brokers: brokers.split(','), logLevel: logLevel.NOTHING,
    retry: { initialRetryTime: 200, retries: 12, maxRetryTime: 2000 },
  });
  if (mode === 'produce') {
    const [first, count] = rest.map(Number);
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    let acked = 0;
    for (let i = first; i < first + count; i++) {
      await producer.send({ topic, acks: -1, messages: [{ value: `m-${i}` }] });
      acked++;
    }
    await producer.disconnect();
    console.log(acked);
  } else if (mode === 'consume') {
    const count = Number(rest[0]);
    const seen = new Set();
    const consumer = kafka.consumer({ groupId: `${topic}-readers`, sessionTimeout: 10000 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${seen.size} of ${count} consumed`)), 60000);
      consumer.run({
        eachMessage: async ({ message }) => {
          seen.add(message.value.toString());
          if (seen.size >= count) { clearTimeout(timer); resolve(); }
        },
      });
    });
    await consumer.disconnect();
    console.log(seen.size);
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

main().then(() => process.exit(0), (err) => { console.error(err); process.exit(1); });
