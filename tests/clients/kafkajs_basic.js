// kafkajs: admin create/delete, produce, consume (assign-style via a group with fromBeginning).
// Usage: node kafkajs_basic.js BROKER TOPIC COUNT
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [broker, topic, countText] = process.argv.slice(2);
  const count = Number(countText);
  const kafka = new Kafka({ clientId: 'moldau-test', brokers: [broker], logLevel: logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true });
  if (!created) throw new Error('topic not created');
  const topics = await admin.listTopics();
  if (!topics.includes(topic)) throw new Error('topic not listed');

  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < count; i++) messages.push({ key: `k${i}`, value: `v${i}` });
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const seen = new Set();
  const consumer = kafka.consumer({ groupId: `${topic}-group` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${seen.size} of ${count} consumed`)), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        seen.add(message.value.toString());
        if (seen.size === count) { clearTimeout(timer); resolve(); }
      },
    });
  });
  await consumer.disconnect();
  await admin.deleteTopics({ topics: [topic] });
  const after = await admin.listTopics();
  if (after.includes(topic)) throw new Error('topic still listed after delete');
  await admin.disconnect();
  console.log(`kafkajs ok: produced and consumed ${seen.size}`);
}

main().catch((err) => { console.error(err); process.exit(1); });
